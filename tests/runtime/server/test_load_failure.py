"""A model that cannot load ends the process with exit code 3 and a one-line termination
message naming the cause: Kubernetes shows it on the pod, the operator in the BEMService."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from devcluster.processes import free_port

pytestmark = pytest.mark.http


@pytest.mark.parametrize("broken", ["missing-checkpoint", "corrupt-checkpoint"])
def test_load_failure_exits_3_with_the_cause_in_the_termination_message(
        toy_assets: tuple[Path, Path], tmp_path: Path, broken: str) -> None:
    base, bem = toy_assets
    if broken == "missing-checkpoint":
        bem_dir = tmp_path / "no-such-checkpoint"
    else:
        bem_dir = tmp_path / "bem"
        bem_dir.mkdir()
        for f in bem.iterdir():
            (bem_dir / f.name).write_bytes(b"not what it should be" if f.suffix == ".safetensors"
                                           else f.read_bytes())
    message = tmp_path / "termination-log"
    proc = subprocess.run(
        [sys.executable, "-m", "bem_runtime", "serve", "--port", str(free_port()),
         "--host", "127.0.0.1", "--model-dir", str(base), "--bem-dir", str(bem_dir),
         "--device", "cpu"],
        env={**os.environ, "OMP_NUM_THREADS": "1",
             "BEM_TERMINATION_MESSAGE_PATH": str(message)},
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = message.read_text()
    assert text.startswith("model load failed: ") and "\n" not in text.strip()
    assert str(bem_dir) in text or "safetensors" in text.lower() or "header" in text.lower(), text

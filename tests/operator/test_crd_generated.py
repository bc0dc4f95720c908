"""The CRD and its copies are generated from the typed spec (scripts/gen_crds.py): the committed
files must equal what the generator writes now, and the check must catch a file that differs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _gen_crds() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "scripts" / "gen_crds.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _gen_crds()


def test_committed_files_equal_the_generated_ones(capsys):
    code = GEN.main(["--check"])
    assert code == 0, capsys.readouterr().err  # the diff; `make crds` writes the files


def test_the_check_finds_a_stale_copy_and_writing_fixes_it(tmp_path: Path):
    files = GEN.generated()
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text, encoding="utf-8")
    assert GEN.stale(tmp_path, files) == {}
    stale_copy = tmp_path / "manifests" / "crd.yaml"
    stale_copy.write_text(stale_copy.read_text().replace("maxReplicas", "maxReplica"), encoding="utf-8")
    (tmp_path / "helm" / "bem-operator" / "crds" / "bemservice.yaml").unlink()
    diffs = GEN.stale(tmp_path, files)
    assert set(diffs) == {Path("manifests/crd.yaml"), Path("helm/bem-operator/crds/bemservice.yaml")}
    removed = [line for line in diffs[Path("manifests/crd.yaml")].splitlines() if line.startswith("-")]
    assert any(line[1:].strip() == "maxReplica:" for line in removed[1:])
    assert sorted(map(str, GEN.write(tmp_path))) == sorted(map(str, diffs))
    assert GEN.stale(tmp_path, files) == {}


def test_every_copy_is_one_crd():
    texts = {path: (ROOT / path).read_text(encoding="utf-8") for path in GEN.CRD_COPIES}
    assert len(set(texts.values())) == 1
    doc = yaml.safe_load(next(iter(texts.values())))
    assert doc["kind"] == "CustomResourceDefinition"


def test_the_operator_does_not_import_the_generator():
    """The generator needs a dev dependency (kubernetes-validate, which the kubernetes client
    imports by itself when it is installed); the running operator must not load the generator."""
    probe = ("import sys, bem_operator.builders, bem_operator.reconcile; "
             "print(sorted(m for m in sys.modules if m.startswith('bem_operator.crdgen')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Host-state reads that run beside a live node (no node needed here)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from devcluster import hoststate


def test_kubepods_cgroups_skips_a_cgroup_removed_while_it_walks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pods = tmp_path / "freezer" / hoststate.KUBEPODS
    (pods / "besteffort" / "pod-a" / "c1").mkdir(parents=True)
    (pods / "burstable").mkdir()
    gone = pods / "besteffort" / "pod-a"
    monkeypatch.setattr(hoststate, "CGROUP_ROOT", tmp_path)
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:  # the kubelet removed it after it was listed
        if Path(os.fsdecode(path)) == gone:  # type: ignore[arg-type]
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_scandir(path)  # type: ignore[arg-type]
    monkeypatch.setattr(os, "scandir", scandir)
    assert hoststate.kubepods_cgroups() == sorted(
        str(p) for p in (pods, pods / "besteffort", gone, pods / "burstable"))

"""Kubeconfig files: client-certificate and bearer-token forms."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devcluster import kubeconfig


def test_token_kubeconfig_round_trip(tmp_path: Path) -> None:
    path = kubeconfig.write(tmp_path / "kc", server="https://127.0.0.1:6443",
                            ca_file=tmp_path / "ca.crt", user="sa", token="abc",
                            namespace="ns1")
    doc = yaml.safe_load(path.read_text())
    assert doc["users"][0]["user"] == {"token": "abc"}
    assert doc["contexts"][0]["context"]["namespace"] == "ns1"
    assert kubeconfig.server_of(path) == "https://127.0.0.1:6443"
    assert path.stat().st_mode & 0o077 == 0


def test_cert_kubeconfig_names_files(tmp_path: Path) -> None:
    path = kubeconfig.write(tmp_path / "kc", server="https://127.0.0.1:1", ca_file=tmp_path / "ca",
                            user="admin", cert_file=tmp_path / "a.crt", key_file=tmp_path / "a.key")
    user = yaml.safe_load(path.read_text())["users"][0]["user"]
    assert user == {"client-certificate": str(tmp_path / "a.crt"),
                    "client-key": str(tmp_path / "a.key")}


@pytest.mark.parametrize("kwargs", [
    {},
    {"token": "t", "cert_file": Path("c"), "key_file": Path("k")},
    {"cert_file": Path("c")},
])
def test_exactly_one_credential(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="either cert_file and key_file, or token"):
        kubeconfig.write(tmp_path / "kc", server="https://x", ca_file=tmp_path / "ca",
                         user="u", **kwargs)


def test_server_of_rejects_a_dangling_context(tmp_path: Path) -> None:
    path = tmp_path / "kc"
    path.write_text(yaml.safe_dump({"current-context": "nope", "contexts": [], "clusters": []}))
    with pytest.raises(ValueError, match="current-context 'nope' not found"):
        kubeconfig.server_of(path)

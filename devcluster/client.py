"""Using a cluster: kubectl, the Python API client, least-privilege kubeconfigs."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from devcluster import kubeconfig as kcfg
from devcluster.binaries import Binaries

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class Client:
    """What tests and tools need from a cluster, whoever started it."""

    def __init__(self, kubeconfig: Path, bins: Binaries, *, scratch: Path) -> None:
        self.kubeconfig = kubeconfig
        self.bins = bins
        self.scratch = scratch
        self.startup_seconds: float | None = None

    @property
    def kubectl_bin(self) -> Path:
        return self.bins.kubectl

    @property
    def helm_bin(self) -> Path:
        return self.bins.helm

    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm subprocesses aimed at this cluster."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            # Discovery cache next to the cluster, not in the user's ~/.kube.
            "KUBECACHEDIR": str(self.scratch / "kube-cache"),
        }

    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raises with stderr when check fails."""
        out = subprocess.run(
            [str(self.kubectl_bin), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check and out.returncode != 0:
            raise subprocess.CalledProcessError(
                out.returncode, ["kubectl", *args], out.stdout,
                f"kubectl {' '.join(args)} failed:\n{out.stderr}",
            )
        return out

    def api_client(self) -> Any:
        """A `kubernetes` ApiClient for this cluster (caller closes it)."""
        from kubernetes import config  # the operator extra; imported on demand

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubeconfig_for_service_account(
        self, namespace: str, name: str, *, duration: str = "24h"
    ) -> Path:
        """A kubeconfig authenticating as the ServiceAccount (TokenRequest API)."""
        for label, value in (("namespace", namespace), ("name", name)):
            if not _DNS_LABEL.match(value):
                raise ValueError(f"ServiceAccount {label} {value!r} is not a DNS label")
        token = self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()
        path = self.scratch / "service-accounts" / f"{namespace}.{name}.kubeconfig"
        return kcfg.write(
            path,
            server=kcfg.server_of(self.kubeconfig),
            ca_file=self._ca_file(),
            user=f"system:serviceaccount:{namespace}:{name}",
            token=token,
            namespace=namespace,
        )

    def _ca_file(self) -> Path:
        """The CA of the current cluster as a file (kubeconfigs may embed it)."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        ctx = {c["name"]: c["context"] for c in doc["contexts"]}[doc["current-context"]]
        cluster = {c["name"]: c["cluster"] for c in doc["clusters"]}[ctx["cluster"]]
        if "certificate-authority" in cluster:
            ca = Path(cluster["certificate-authority"])
            return ca if ca.is_absolute() else (self.kubeconfig.parent / ca)
        if "certificate-authority-data" in cluster:
            path = self.scratch / "ca.crt"
            path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
            return path
        raise ValueError(f"{self.kubeconfig}: the cluster entry names no certificate authority")


class AttachedCluster(Client):
    """A cluster someone else runs (BEM_DEVCLUSTER_KUBECONFIG): never stopped here."""

    def __init__(self, kubeconfig: Path, bins: Binaries) -> None:
        if not kubeconfig.is_file():
            raise FileNotFoundError(f"kubeconfig {kubeconfig} does not exist")
        super().__init__(kubeconfig, bins, scratch=Path(tempfile.mkdtemp(prefix="bem-attach-")))

    def stop(self) -> None:
        """Forget our scratch files; the cluster itself keeps running."""
        shutil.rmtree(self.scratch, ignore_errors=True)

"""Using a cluster: kubectl, the Python API client, least-privilege kubeconfigs."""

from __future__ import annotations

import base64
import json
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


class KubectlError(subprocess.CalledProcessError):
    """kubectl failed; the message carries its stderr (what to fix)."""

    def __str__(self) -> str:
        return f"{' '.join(self.cmd)} exited {self.returncode}: {self.stderr.strip()}"


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
            raise KubectlError(out.returncode, ["kubectl", *args], out.stdout, out.stderr)
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

    def register_local_apiservice(
        self, group: str, version: str, port: int, *, ca_bundle: bytes | None = None
    ) -> str:
        """Route an aggregated API (e.g. custom.metrics.k8s.io) to 127.0.0.1:port.

        Endpoints may not hold loopback addresses, but the aggregator resolves
        an ExternalName Service to its host: `localhost`. The server receives
        the front-proxy client certificate (CA in kube-system ConfigMap
        extension-apiserver-authentication) and X-Remote-User/Group headers.
        Without ca_bundle the server's certificate is not verified; with it, the
        certificate must name the Service (`local-<...>.kube-system.svc`).
        Returns the APIService name (cluster-scoped: delete it when done).
        """
        name = f"{version}.{group}"
        svc_name = _local_service_name(name)
        tls = ({"caBundle": base64.b64encode(ca_bundle).decode()} if ca_bundle
               else {"insecureSkipTLSVerify": True})
        objects = [
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": svc_name, "namespace": "kube-system"},
             "spec": {"type": "ExternalName", "externalName": "localhost",
                      "ports": [{"name": "https", "port": port, "targetPort": port}]}},
            {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
             "metadata": {"name": name},
             "spec": {"group": group, "version": version, "groupPriorityMinimum": 100,
                      "versionPriority": 100,
                      "service": {"name": svc_name, "namespace": "kube-system", "port": port},
                      **tls}},
        ]
        self.kubectl("apply", "-f", "-",
                     input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
        return name

    def unregister_local_apiservice(self, name: str) -> None:
        """Remove what register_local_apiservice created: a dead APIService
        breaks discovery for every other client of the cluster."""
        self.kubectl("delete", "apiservice", name, "--ignore-not-found")
        self.kubectl("-n", "kube-system", "delete", "service", _local_service_name(name),
                     "--ignore-not-found")

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


def _local_service_name(apiservice: str) -> str:
    return "local-" + re.sub(r"[^a-z0-9-]", "-", apiservice.lower())[:50].strip("-")


class AttachedCluster(Client):
    """A cluster someone else runs (BEM_DEVCLUSTER_KUBECONFIG): never stopped here."""

    def __init__(self, kubeconfig: Path, bins: Binaries) -> None:
        if not kubeconfig.is_file():
            raise FileNotFoundError(f"kubeconfig {kubeconfig} does not exist")
        super().__init__(kubeconfig, bins, scratch=Path(tempfile.mkdtemp(prefix="bem-attach-")))

    def stop(self) -> None:
        """Forget our scratch files; the cluster itself keeps running."""
        shutil.rmtree(self.scratch, ignore_errors=True)

"""Helpers of the operator e2e tests: polling with deadlines, the operator process, kubectl."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from devcluster import edge
from devcluster.processes import free_port

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "bemservice.yaml"
CHECKPOINT_CRD = REPO / "crds" / "bemcheckpoint.yaml"
RBAC = REPO / "manifests" / "rbac.yaml"
# KEDA's own CRDs, from the KEDA module the add-on build downloads (devcluster/build-addons.sh).
ADDONS_SCRIPT = REPO / "devcluster" / "build-addons.sh"
HTTP_ROUTES = "httproutes.gateway.networking.k8s.io"
# Traefik, the local cluster's Gateway: its Middleware CRD (spec.gateway.rateLimit), as the
# local edge installs it.
MIDDLEWARES = "middlewares.traefik.io"
RESYNC_SECONDS = 5  # the periodic check, short so retried problems clear quickly here
T = TypeVar("T")


def eventually(what: str, probe: Callable[[], T], timeout: float = 90.0,
               interval: float = 0.5) -> T:
    """Polls `probe` until it returns a truthy value; fails naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except (subprocess.CalledProcessError, KeyError, IndexError, TypeError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout:.0f}s waiting for {what}; "
                                 f"last seen: {str(last)[:2000]}")
        time.sleep(interval)


def install_crd(cluster: Any, crd: Path = CRD) -> None:
    """Applies the CRD (and the BEMCheckpoint CRD, which the operator watches too) and waits
    until both are Established and served. (`kubectl wait` right after the apply can fail:
    the status has no conditions yet.)"""
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
    for path, plural in ((crd, "bemservices"), (CHECKPOINT_CRD, "bemcheckpoints")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        eventually(f"the {plural} CRD Established", lambda plural=plural: cluster.kubectl(
            "get", "crd", f"{plural}.bem.ai", "-o", f"jsonpath={jsonpath}",
            check=False).stdout.strip() == "True", timeout=60)
        eventually(f"the {plural} API", lambda plural=plural: cluster.kubectl(
            "get", plural, "-A", check=False).returncode == 0, timeout=60)


def keda_crd() -> Path:
    """KEDA's ScaledObject CRD as KEDA ships it (the real schema, not a copy of ours)."""
    out = subprocess.run(["bash", str(ADDONS_SCRIPT), "--print-dir"], capture_output=True,
                         text=True, check=False)
    crd = Path(out.stdout.strip()) / "src/keda/config/crd/bases/keda.sh_scaledobjects.yaml"
    assert out.returncode == 0 and crd.is_file(), (
        f"KEDA's ScaledObject CRD is not at {crd}: run devcluster/build-addons.sh, which "
        f"downloads KEDA's module ({out.stderr.strip()[-500:]})")
    return crd


def install_keda_crd(cluster: Any) -> None:
    """Installs KEDA's ScaledObject CRD (no KEDA operator: ScaledObjects are stored, not acted
    on) and waits until the API serves it."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(keda_crd()))
    eventually("the scaledobjects API", lambda: cluster.kubectl(
        "get", "scaledobjects.keda.sh", "-A", check=False).returncode == 0, timeout=60)


def gateway_api_crds() -> list[Path]:
    """Gateway API's standard-channel CRDs as the project ships them (fetched once per version;
    its ValidatingAdmissionPolicy, which guards every CRD write, is left out)."""
    crds = [path for path in sorted(edge.gateway_api_dir().glob("*.yaml"))
            if all(doc["kind"] == "CustomResourceDefinition"
                   for doc in yaml.safe_load_all(path.read_text()) if doc)]
    assert any(path.name.endswith("_httproutes.yaml") for path in crds), crds
    return crds


def _http_routes_served(cluster: Any) -> bool:
    return cluster.kubectl("get", HTTP_ROUTES, "-A", check=False).returncode == 0


def install_gateway_api(cluster: Any) -> None:
    """Installs Gateway API's CRDs (no Gateway controller: routes are stored, their status is
    what a test writes) and waits until the API serves HTTPRoutes."""
    for crd in gateway_api_crds():
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    eventually("the httproutes API", lambda: _http_routes_served(cluster), timeout=60)


def remove_gateway_api(cluster: Any) -> None:
    """Deletes Gateway API's CRDs where an earlier module (or run) installed them."""
    for crd in gateway_api_crds():
        cluster.kubectl("delete", "--ignore-not-found", "--wait=true", "-f", str(crd))
    eventually("the httproutes API to be gone", lambda: not _http_routes_served(cluster),
               timeout=60)


def traefik_middleware_crd() -> Path:
    """Traefik's own Middleware CRD (the real schema), as the local edge installs it."""
    crd = edge.build_dir() / "crds" / "traefik.io_middlewares.yaml"
    assert crd.is_file(), f"devcluster/build-edge.sh left no {crd}"
    return crd


def _middlewares_served(cluster: Any) -> bool:
    return cluster.kubectl("get", MIDDLEWARES, "-A", check=False).returncode == 0


def install_traefik_middleware_crd(cluster: Any) -> None:
    """Installs Traefik's Middleware CRD (no Traefik runs: Middlewares are stored, not acted
    on) and waits until the API serves it."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(traefik_middleware_crd()))
    eventually("the middlewares API", lambda: _middlewares_served(cluster), timeout=60)


def remove_traefik_middleware_crd(cluster: Any) -> None:
    """Deletes Traefik's Middleware CRD where an earlier module (or run) installed it."""
    cluster.kubectl("delete", "crd", MIDDLEWARES, "--ignore-not-found", "--wait=true")
    eventually("the middlewares API to be gone", lambda: not _middlewares_served(cluster),
               timeout=60)


class OperatorProcess:
    """The operator under test, started and stopped like a real deployment would be."""

    def __init__(self, kubeconfig: Path, log_path: Path,
                 resync_seconds: float = RESYNC_SECONDS,
                 extra_env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.extra_env = dict(extra_env or {})
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "BEM_OPERATOR_NAMESPACES": "",
            "BEM_OPERATOR_BIND_ADDRESS": "127.0.0.1",
            "BEM_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "BEM_OPERATOR_HEALTH_PORT": str(self.health_port),
            "BEM_OPERATOR_RESYNC_SECONDS": str(self.resync_seconds),
            **self.extra_env,
        }
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bem_operator"], env=env, stdout=log,
                stderr=subprocess.STDOUT, cwd=REPO)
        eventually("the operator's liveness endpoint", self._healthy, timeout=60)

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"The operator exited with {self.process.returncode}:\n"
                                 f"{self.log_text()[-4000:]}")
        return self.http_get(self.health_port, "/healthz")[0] == 200

    def http_get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""

    def stop(self) -> int | None:
        """SIGTERM, as the kubelet does; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError("The operator did not stop within 30s of SIGTERM") from None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing gets flushed or finished."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, since: int = 0) -> str:
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")


class Kube:
    """kubectl in one test namespace, returning parsed JSON."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def kubectl(self, *args: str, input: str | None = None,  # noqa: A002
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        out = self.kubectl("get", kind, name, "-o", "json", "--show-managed-fields", check=False)
        if out.returncode != 0:
            if "NotFound" in out.stderr:
                return None
            raise AssertionError(f"kubectl get {kind} {name} failed: {out.stderr}")
        return json.loads(out.stdout)

    def list(self, kind: str, selector: str | None = None) -> list[dict[str, Any]]:
        args = ["get", kind, "-o", "json"] + (["-l", selector] if selector else [])
        return json.loads(self.kubectl(*args).stdout)["items"]

    def patch(self, kind: str, name: str, patch: dict[str, Any], kind_of: str = "merge") -> None:
        self.kubectl("patch", kind, name, "--type", kind_of, "-p", json.dumps(patch))

    def events_for(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.list("events") if e["involvedObject"].get("name") == name]


def bemservice(name: str, **spec: Any) -> dict[str, Any]:
    """A BEMService whose model is baked into the image (no PVC needed), 2 replicas."""
    body: dict[str, Any] = {"model": {"source": "Image"}, "replicas": 2}
    body.update(spec)
    return {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
            "metadata": {"name": name}, "spec": body}


def wait_ready(kube: Kube, name: str, timeout: float = 120.0) -> dict[str, Any]:
    """The BEMService once Ready for its current generation."""
    def probe() -> dict[str, Any] | None:
        bems = kube.get("bemservices", name)
        status = (bems or {}).get("status") or {}
        if bems and status.get("phase") == "Ready" and \
                status.get("observedGeneration") == bems["metadata"]["generation"]:
            return bems
        return None
    return eventually(f"BEMService {name} to be Ready", probe, timeout=timeout)


def condition(bems: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in bems["status"]["conditions"] if c["type"] == kind)


def running_pods(kube: Kube, name: str) -> list[dict[str, Any]]:
    return [p for p in kube.list("pods", f"bem.ai/service={name}")
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")]


def is_controlled_by(child: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(ref.get("uid") == owner["metadata"]["uid"] and ref.get("controller")
               for ref in child["metadata"].get("ownerReferences") or [])


def replica_managers(deployment: dict[str, Any]) -> set[str]:
    """Field managers that own the Deployment's spec.replicas."""
    return {entry["manager"] for entry in deployment["metadata"].get("managedFields") or []
            if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})}

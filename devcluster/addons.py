"""Cluster add-ons of the autoscaling loop: the Prometheus operator with one Prometheus, and KEDA.

Made here like the rest of the cluster, nothing pulled:
- binaries: KEDA (operator, metrics API server), the Prometheus operator (with its config
  reloader) and Prometheus, built from Go modules by build-addons.sh;
- images: docker/binary.Dockerfile on the project's Debian base (images.py builds, caches and
  imports them like the project's own);
- manifests: the projects' own (the Prometheus operator's bundle.yaml, KEDA's config/minimal
  through `kubectl kustomize`), patched only where this cluster differs: local images and small
  requests for a 2-core node. Names resolve through the cluster's CoreDNS (kubesystem.py).

Prometheus selects every ServiceMonitor and PrometheusRule in the cluster (empty selectors), so
what the BEM operator and chart create is what makes it scrape and evaluate.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from devcluster import images
from devcluster.client import Client
from devcluster.health import wait_until
from devcluster.realnode import wait_served_here

BUILD_SCRIPT = Path(__file__).with_name("build-addons.sh")
# The binaries build-addons.sh makes: the names of its WANT entries ("name:module:version:pkg").
BINARIES = tuple(re.findall(r'^\s+"([a-z-]+):', BUILD_SCRIPT.read_text().split("WANT=(", 1)[1]
                            .split(")", 1)[0], re.MULTILINE))

MONITORING_NS = "monitoring"
KEDA_NS = "keda"
FIELD_MANAGER = "bem-devcluster"
PROMETHEUS_HOST = f"prometheus.{MONITORING_NS}.svc"
PROMETHEUS_PORT = 9090
PROMETHEUS_URL = f"http://{PROMETHEUS_HOST}:{PROMETHEUS_PORT}"
# This machine has no cluster DNS: install() notes the Service's ClusterIP here, and checks
# kube-proxy serves it, before prometheus_api() sends it anything.
_prometheus_from_host: list[str] = []
SMALL = {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def log(msg: str) -> None:
    print(f"[addons] {msg}", file=sys.stderr, flush=True)


# ---- binaries -----------------------------------------------------------------------------
def run_script(script: Path, *args: str, quiet: bool = False) -> str:
    """Runs one of devcluster's build or fetch scripts; returns the last line it printed (the
    directory or binary it made)."""
    out = subprocess.run(["bash", str(script), *args], text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if quiet else None)
    if out.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed ({out.returncode})")
    return out.stdout.strip().splitlines()[-1]


def _script(*args: str, quiet: bool = False) -> str:
    return run_script(BUILD_SCRIPT, *args, quiet=quiet)


def bin_dir() -> Path:
    return Path(_script("--print-dir"))


def ensure_binaries() -> Path:
    """The add-ons' binaries (a Go build of several minutes, once per version)."""
    found = bin_dir()
    if any(not (found / b).is_file() for b in BINARIES):
        log(f"building {', '.join(BINARIES)} into {found} (minutes, once)")
        _script()
    return found


def source(name: str) -> Path:
    """The module source of `keda` or `prometheus-operator` (CRDs, manifests)."""
    path = bin_dir() / "src" / name
    if not (path / ".complete").is_file():
        _script("--sources")
    if not path.is_dir():
        raise RuntimeError(f"{path} is missing: run devcluster/build-addons.sh")
    return path


def version_of(script_var: str, script: Path = BUILD_SCRIPT) -> str:
    """The default a build script gives `script_var` (the one place naming a version)."""
    for line in script.read_text().splitlines():
        if line.startswith(f'{script_var}="${{{script_var}:-'):
            return line.split(":-", 1)[1].split("}", 1)[0]
    raise RuntimeError(f"{script_var} not found in {script}")


KEDA_VERSION = version_of("KEDA_VERSION")
PROMOP_VERSION = version_of("PROMOP_VERSION")
PROMETHEUS_VERSION = version_of("PROMETHEUS_VERSION")


# ---- images -------------------------------------------------------------------------------
def binary_image(name: str, tag: str, entrypoint: str, *others: str,
                 dockerfile: str = "docker/binary.Dockerfile") -> images.Image:
    """An image of build-addons.sh's binaries `entrypoint` (and `others`)."""
    def payload() -> dict[str, Path]:
        return {f"bin/{n}": ensure_binaries() / n for n in (entrypoint, *others)}
    return images.Image(name, dockerfile, None, (("ENTRYPOINT", entrypoint),), tag=tag,
                        payload=payload)


PROMETHEUS = binary_image("bem-prometheus", PROMETHEUS_VERSION, "prometheus")
PROMETHEUS_OPERATOR = binary_image("bem-prometheus-operator", PROMOP_VERSION,
                                   "prometheus-operator")
CONFIG_RELOADER = binary_image("bem-prometheus-config-reloader", PROMOP_VERSION,
                               "prometheus-config-reloader")
KEDA = binary_image("bem-keda", KEDA_VERSION, "keda-operator", "keda-adapter")
IMAGES = (PROMETHEUS, PROMETHEUS_OPERATOR, CONFIG_RELOADER, KEDA)


# ---- manifests ----------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads a bare `=` as the "value" tag (the CRDs' enums hold one): a string."""


_Loader.add_constructor("tag:yaml.org,2002:value", _Loader.construct_yaml_str)


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=_Loader) if d]  # noqa: S506 - a SafeLoader


def kustomized(kubectl: Path, directory: Path) -> list[dict[str, Any]]:
    """A kustomization rendered by `kubectl kustomize` (no cluster needed)."""
    return load_docs(subprocess.run([str(kubectl), "kustomize", str(directory)],
                                check=True, capture_output=True, text=True).stdout)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


def local_image(container: dict[str, Any], image: images.Image) -> None:
    container["image"] = image.ref
    container["imagePullPolicy"] = "IfNotPresent"
    container["resources"] = copy.deepcopy(SMALL)


def prometheus_operator_manifests() -> list[dict[str, Any]]:
    """bundle.yaml (CRDs, RBAC, Deployment, Service) moved to the monitoring namespace."""
    docs = load_docs((source("prometheus-operator") / "bundle.yaml").read_text())
    for doc in docs:
        if doc["kind"] == "CustomResourceDefinition":
            continue
        if doc["kind"] in ("Deployment", "ServiceAccount", "Service"):
            doc["metadata"]["namespace"] = MONITORING_NS
        if doc["kind"] == "ClusterRoleBinding":
            for subject in doc["subjects"]:
                subject["namespace"] = MONITORING_NS
        if doc["kind"] == "Deployment":
            (container,) = containers(doc)
            local_image(container, PROMETHEUS_OPERATOR)
            container.pop("command", None)
            # No kubelet Service to manage: this cluster has no node-metrics scraping.
            container["args"] = [f"--prometheus-config-reloader={CONFIG_RELOADER.ref}"]
    return [_namespace(MONITORING_NS), *docs]


def prometheus_manifests() -> list[dict[str, Any]]:
    """One Prometheus selecting every ServiceMonitor and PrometheusRule, its RBAC (the
    Prometheus operator's example role) and its Service."""
    rbac_dir = source("prometheus-operator") / "example" / "rbac" / "prometheus"
    docs = []
    for name in ("prometheus-service-account.yaml", "prometheus-cluster-role.yaml",
                 "prometheus-cluster-role-binding.yaml"):
        doc = load_docs((rbac_dir / name).read_text())[0]
        if doc["kind"] == "ServiceAccount":
            doc["metadata"]["namespace"] = MONITORING_NS
        if doc["kind"] == "ClusterRoleBinding":
            for subject in doc["subjects"]:
                subject["namespace"] = MONITORING_NS
        docs.append(doc)
    docs.append({
        "apiVersion": "monitoring.coreos.com/v1", "kind": "Prometheus",
        "metadata": {"name": "prometheus", "namespace": MONITORING_NS},
        "spec": {
            "image": PROMETHEUS.ref, "version": PROMETHEUS_VERSION, "imagePullPolicy": "IfNotPresent",
            "replicas": 1, "serviceAccountName": "prometheus",
            "serviceMonitorSelector": {}, "serviceMonitorNamespaceSelector": {},
            "ruleSelector": {}, "ruleNamespaceSelector": {},
            "scrapeInterval": "5s", "evaluationInterval": "5s", "retention": "2h",
            "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                          "limits": {"memory": "1Gi"}},
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
                                "fsGroup": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
        },
    })
    docs.append({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "prometheus", "namespace": MONITORING_NS},
        "spec": {"selector": {"app.kubernetes.io/name": "prometheus",
                              "operator.prometheus.io/name": "prometheus"},
                 "ports": [{"name": "web", "port": PROMETHEUS_PORT, "targetPort": "web"}]},
    })
    return docs


def keda_manifests(kubectl: Path) -> list[dict[str, Any]]:
    """KEDA's config/minimal (CRDs, RBAC, operator, metrics API server, APIService); the
    adapter finds the operator by its Service's name, as upstream."""
    docs = kustomized(kubectl, source("keda") / "config" / "minimal")
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        (container,) = containers(doc)
        local_image(container, KEDA)
        operator = doc["metadata"]["name"] == "keda-operator"
        container["command"] = [f"/usr/bin/keda-{'operator' if operator else 'adapter'}"]
    return docs


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


# ---- install ------------------------------------------------------------------------------
def apply(client: Client, docs: Iterable[dict[str, Any]]) -> None:
    # Server-side: the CRDs are larger than client-side apply's annotation may hold.
    client.kubectl("apply", "--server-side", "--force-conflicts",
                   f"--field-manager={FIELD_MANAGER}", "-f", "-",
                   input=yaml.safe_dump_all(list(docs)))


FIRST = ("Namespace", "CustomResourceDefinition")


def apply_in_order(client: Client, docs: list[dict[str, Any]]) -> None:
    """Namespaces and CRDs first, then (once the CRDs are Established) what lives in them."""
    apply(client, [d for d in docs if d["kind"] in FIRST])
    crds = [d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"]
    if crds:
        client.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                       *(f"crd/{name}" for name in crds))
    apply(client, [d for d in docs if d["kind"] not in FIRST])


def install(client: Client, timeout: float = 300.0) -> float:
    """Install (or update) the add-ons into a cluster whose real node holds their images, and
    wait until Prometheus answers and the external metrics API is available. Returns seconds."""
    began = time.monotonic()
    apply_in_order(client, prometheus_operator_manifests())
    apply(client, prometheus_manifests())
    apply_in_order(client, keda_manifests(client.kubectl_bin))

    def wait(*args: str) -> None:  # kubectl rollout status / wait, within what is left
        left = max(10.0, timeout - (time.monotonic() - began))
        client.kubectl(*args, f"--timeout={int(left)}s", timeout=left + 10)
    for ns, deploy in ((MONITORING_NS, "prometheus-operator"), (KEDA_NS, "keda-operator"),
                       (KEDA_NS, "keda-metrics-apiserver")):
        wait("rollout", "status", "-n", ns, f"deployment/{deploy}")
    wait_until("the Prometheus operator to create the Prometheus StatefulSet",
               lambda: client.kubectl("get", "statefulset", "-n", MONITORING_NS,
                                      "prometheus-prometheus", check=False).returncode == 0,
               timeout=max(10.0, timeout - (time.monotonic() - began)), interval=2.0)
    wait("rollout", "status", "-n", MONITORING_NS, "statefulset/prometheus-prometheus")
    wait("wait", "--for=condition=Available", "apiservice/v1beta1.external.metrics.k8s.io")
    ip = client.kubectl("get", "service", "-n", MONITORING_NS, "prometheus",
                        "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
    wait_served_here(ip)  # before anyone here sends it a query
    _prometheus_from_host[:] = [f"http://{ip}:{PROMETHEUS_PORT}"]
    seconds = time.monotonic() - began
    log(f"Prometheus {PROMETHEUS_VERSION}, Prometheus operator {PROMOP_VERSION} and KEDA {KEDA_VERSION} "
        f"ready in {seconds:.0f}s")
    return seconds


def prometheus_api(path: str, **params: str) -> Any:
    """GET /api/v1/<path> of the installed Prometheus from this machine (install() has checked
    kube-proxy serves its ClusterIP here); the data of a success, else an error saying why."""
    if not _prometheus_from_host:
        raise RuntimeError("addons.install() has not run in this process: Prometheus's "
                           "ClusterIP is not known here")
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{_prometheus_from_host[0]}/api/v1/{path}{query}",
                                timeout=10) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused /api/v1/{path} {params}: {body}")
    return body["data"]


def query(expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    return prometheus_api("query", query=expr)["result"]

"""Install paths against the local control plane: helm install/upgrade, the CRD upgrade path,
kubectl apply -f manifests/, the samples, and the RBAC the chart really grants.

Cluster-scoped objects are shared with the rest of the session, so every release gets a
random name (its ClusterRole is then `<release>-bem-operator`) and the CRD is always put
back to the repository's version.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support import CHART, MANIFESTS, ROOT, Helm, load_yaml_docs

pytestmark = pytest.mark.e2e

CRD_NAME = "bemservices.bem.ai"
CRD_FILE = ROOT / "crds" / "bemservice.yaml"
CHECKPOINT_CRD_FILE = ROOT / "crds" / "bemcheckpoint.yaml"


@pytest.fixture
def cluster_helm(cluster: Any, tmp_path: Path) -> Helm:
    """helm aimed at the local control plane, with its caches in a temp folder."""
    env = {**cluster.env(), **{f"HELM_{k}_HOME": str(tmp_path / k.lower())
                               for k in ("CACHE", "CONFIG", "DATA")}}
    return Helm(Path(cluster.helm_bin), env)


@pytest.fixture
def release(cluster_helm: Helm, namespace: str) -> Iterator[str]:
    """A release name; uninstalled afterwards (its ClusterRole/Binding are cluster-scoped)."""
    name = f"bem-{secrets.token_hex(3)}"
    yield name
    cluster_helm.run("uninstall", name, "-n", namespace, "--wait", "--ignore-not-found",
                     check=False)


def _get(cluster: Any, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def _can(cluster: Any, account: str, verb: str, resource: str, namespace: str) -> bool:
    """`kubectl auth can-i` as the account; "plural.group/sub" names a subresource."""
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    out = cluster.kubectl("auth", "can-i", verb, resource, *extra, "-n", namespace,
                          f"--as={account}", check=False)
    return out.stdout.strip() == "yes"


def _columns(crd: dict[str, Any]) -> set[str]:
    versions = crd["spec"]["versions"]
    return {c["name"] for v in versions for c in v.get("additionalPrinterColumns", [])}


def _crd_columns(cluster: Any) -> set[str]:
    return _columns(_get(cluster, "crd", CRD_NAME))


def _apply_crd(cluster: Any, text: str, manager: str) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", f"--field-manager={manager}",
                    "-f", "-", input=text)
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")


def test_helm_install_and_upgrade_create_the_operator(
    cluster: Any, cluster_helm: Helm, namespace: str, release: str
) -> None:
    out = cluster_helm.run("install", release, str(CHART), "-n", namespace, "--wait",
                           "--timeout", "120s").stdout
    assert "kubectl apply --server-side --force-conflicts" in out  # NOTES: CRD upgrade path
    full = f"{release}-bem-operator"
    crd = _get(cluster, "crd", CRD_NAME)
    assert any(c["type"] == "Established" and c["status"] == "True"
               for c in crd["status"]["conditions"])
    assert _get(cluster, "serviceaccount", full, "-n", namespace)["metadata"]["name"] == full
    assert _get(cluster, "clusterrole", full)["rules"]
    binding = _get(cluster, "clusterrolebinding", full)
    assert binding["subjects"][0] == {"kind": "ServiceAccount", "name": full,
                                      "namespace": namespace}
    deployment = _get(cluster, "deployment", full, "-n", namespace)
    assert deployment["status"].get("readyReplicas") == 2  # a leader and a standby
    pods = _get(cluster, "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={release}")
    assert [p["status"]["phase"] for p in pods["items"]] == ["Running", "Running"]
    assert all(p["spec"]["nodeName"].startswith("kwok-") for p in pods["items"])
    assert _get(cluster, "pdb", full, "-n", namespace)["spec"]["maxUnavailable"] == 1
    assert _get(cluster, "service", f"{full}-metrics", "-n", namespace)["spec"]["ports"][0][
        "name"] == "metrics"

    cluster_helm.run("upgrade", release, str(CHART), "-n", namespace, "--reset-then-reuse-values",
                     "--set", "operator.resyncSeconds=45", "--wait", "--timeout", "120s")
    upgraded = _get(cluster, "deployment", full, "-n", namespace)
    env = {e["name"]: e.get("value") for e in
           upgraded["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BEM_OPERATOR_RESYNC_SECONDS"] == "45"
    history = json.loads(cluster_helm.run("history", release, "-n", namespace, "-o", "json").stdout)
    assert [h["status"] for h in history] == ["superseded", "deployed"]


def test_cluster_wide_rbac_grants_what_the_operator_needs_and_no_more(
    cluster: Any, cluster_helm: Helm, namespace: str, release: str
) -> None:
    cluster_helm.run("install", release, str(CHART), "-n", namespace)
    account = f"system:serviceaccount:{namespace}:{release}-bem-operator"
    for verb, resource in [("watch", "bemservices.bem.ai"), ("patch", "bemservices.bem.ai/status"),
                           ("patch", "deployments.apps"), ("create", "services"),
                           ("delete", "horizontalpodautoscalers.autoscaling"),
                           ("create", "events"), ("get", "secrets")]:
        assert _can(cluster, account, verb, resource, "default"), f"cannot {verb} {resource}"
    for verb, resource in [("delete", "bemservices.bem.ai"), ("list", "secrets"),
                           ("update", "bemservices.bem.ai/status"),
                           ("delete", "deployments.apps"), ("get", "services"),
                           ("create", "pods"), ("update", "deployments.apps"),
                           ("create", "clusterroles.rbac.authorization.k8s.io")]:
        assert not _can(cluster, account, verb, resource, "default"), f"may {verb} {resource}"


def test_the_lease_rights_reach_only_the_release_lease(
    cluster: Any, cluster_helm: Helm, namespace: str, release: str
) -> None:
    cluster_helm.run("install", release, str(CHART), "-n", namespace)
    full = f"{release}-bem-operator"
    account = f"system:serviceaccount:{namespace}:{full}"

    def can(verb: str, lease: str, where: str = namespace) -> bool:
        out = cluster.kubectl("auth", "can-i", verb, f"leases.coordination.k8s.io/{lease}",
                              "-n", where, f"--as={account}", check=False)
        return out.stdout.strip() == "yes"

    assert can("get", full) and can("update", full)
    assert _can(cluster, account, "create", "leases.coordination.k8s.io", namespace)
    for verb, lease, where in [("get", "other", namespace), ("update", "other", namespace),
                               ("patch", full, namespace), ("delete", full, namespace),
                               ("get", full, "default"), ("update", full, "kube-system")]:
        assert not can(verb, lease, where), f"may {verb} Lease {where}/{lease}"
    for verb in ("list", "watch"):
        assert not _can(cluster, account, verb, "leases.coordination.k8s.io", namespace)
    assert not _can(cluster, account, "create", "leases.coordination.k8s.io", "default")


def test_namespaced_mode_grants_rights_only_in_watched_namespaces(
    cluster: Any, cluster_helm: Helm, namespace: str, release: str
) -> None:
    out = cluster_helm.run("install", release, str(CHART), "-n", namespace,
                           "--set", f"watchNamespaces={{{namespace}}}").stdout
    assert f"kubectl apply -n {namespace} -f manifests/samples/" in out  # NOTES
    full = f"{release}-bem-operator"
    assert cluster.kubectl("get", "clusterrole", full, check=False).returncode != 0
    assert _get(cluster, "role", full, "-n", namespace)["rules"]
    account = f"system:serviceaccount:{namespace}:{full}"
    assert _can(cluster, account, "list", "bemservices.bem.ai", namespace)
    assert not _can(cluster, account, "list", "bemservices.bem.ai", "default")


def test_schema_rejects_bad_values_before_anything_is_installed(
    cluster_helm: Helm, namespace: str, release: str
) -> None:
    out = cluster_helm.run("install", release, str(CHART), "-n", namespace,
                           "--set", "watchNamespaces=team-a", check=False)
    assert out.returncode != 0
    assert "at '/watchNamespaces': got string, want array" in out.stderr
    releases = json.loads(cluster_helm.run("list", "-n", namespace, "-a", "-o", "json").stdout)
    assert releases == []


def _old_crd() -> str:
    """The repository's CRD as an older release had it: no Endpoint column, other wording."""
    crd = yaml.safe_load(CRD_FILE.read_text())
    for version in crd["spec"]["versions"]:
        version["additionalPrinterColumns"] = [
            c for c in version.get("additionalPrinterColumns", []) if c["name"] != "Endpoint"]
        version["schema"]["openAPIV3Schema"]["description"] = "An older BEMService schema."
    return yaml.safe_dump(crd)


def test_documented_upgrade_path_updates_the_crd(
    cluster: Any, cluster_helm: Helm, namespace: str, release: str, tmp_path: Path
) -> None:
    assert "Endpoint" in _columns(yaml.safe_load(CRD_FILE.read_text())), (
        "the test needs the CRD's Endpoint printer column")
    try:
        _apply_crd(cluster, _old_crd(), manager="bem-old-release")
        assert "Endpoint" not in _crd_columns(cluster)
        cluster_helm.run("install", release, str(CHART), "-n", namespace)
        # Helm alone never touches an existing CRD: the upgrade leaves the old one.
        cluster_helm.run("upgrade", release, str(CHART), "-n", namespace,
                         "--reset-then-reuse-values")
        assert "Endpoint" not in _crd_columns(cluster)
        # The documented path (docs/install.md, NOTES.txt): the chart's CRD first, then Helm.
        crds = cluster_helm.run("show", "crds", str(CHART)).stdout
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=crds)
        cluster_helm.run("upgrade", release, str(CHART), "-n", namespace,
                         "--reset-then-reuse-values")
        assert "Endpoint" in _crd_columns(cluster)
        schema = _get(cluster, "crd", CRD_NAME)["spec"]["versions"][0]["schema"]
        expected = yaml.safe_load(CRD_FILE.read_text())["spec"]["versions"][0]["schema"]
        description = schema["openAPIV3Schema"]["description"]
        assert description == expected["openAPIV3Schema"]["description"]
    finally:
        _apply_crd(cluster, CRD_FILE.read_text(), manager="kubectl")


def test_observability_config_maps_are_accepted(
    cluster: Any, helm: Helm, namespace: str
) -> None:
    # ServiceMonitor and PrometheusRule need the Prometheus Operator CRDs, which this
    # cluster does not serve; the ConfigMaps are plain core objects.
    objects = helm.template("--set", "dashboards.enabled=true,prometheusAdapter.enabled=true",
                            "-s", "templates/dashboard-configmap.yaml",
                            "-s", "templates/prometheus-adapter-configmap.yaml",
                            namespace=namespace)
    assert [o["kind"] for o in objects] == ["ConfigMap", "ConfigMap"]
    out = cluster.kubectl("apply", "--dry-run=server", "-f", "-",
                          input=yaml.safe_dump_all(objects))
    assert out.stdout.count("(server dry run)") == 2


def test_kubectl_apply_manifests_installs_the_operator(cluster: Any) -> None:
    out = cluster.kubectl("apply", "-f", str(MANIFESTS))
    try:
        for line in ("customresourcedefinition.apiextensions.k8s.io/bemservices.bem.ai",
                     "namespace/bem-system", "serviceaccount/bem-operator",
                     "clusterrole.rbac.authorization.k8s.io/bem-operator",
                     "clusterrolebinding.rbac.authorization.k8s.io/bem-operator",
                     "deployment.apps/bem-operator", "service/bem-operator-metrics"):
            assert line in out.stdout, f"{line} missing from:\n{out.stdout}"
        cluster.kubectl("-n", "bem-system", "rollout", "status", "deployment/bem-operator",
                        "--timeout=120s")
    finally:
        # Only the operator goes: the CRD, namespace and RBAC are shared with other tests,
        # which expect the CRD of crds/ (the copy here could be stale in a working tree).
        cluster.kubectl("delete", "-f", str(MANIFESTS / "operator.yaml"), "--wait=false",
                        check=False)
        _apply_crd(cluster, CRD_FILE.read_text(), manager="kubectl")


@pytest.mark.parametrize("sample", sorted((MANIFESTS / "samples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_sample_is_accepted_by_the_api_server(
    cluster: Any, namespace: str, sample: Path
) -> None:
    for crd, name in ((CRD_FILE, CRD_NAME), (CHECKPOINT_CRD_FILE, "bemcheckpoints.bem.ai")):
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
        cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    docs = load_yaml_docs(sample)
    assert docs and all(d["kind"] in ("BEMService", "BEMCheckpoint") for d in docs)
    out = cluster.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(sample))
    assert "(server dry run)" in out.stdout

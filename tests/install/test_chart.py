"""The Helm chart renders what a platform team expects, and refuses bad values clearly."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from .support import CHART, Helm, by_kind

SAMPLE_VALUES = ["values-cpu.yaml", "values-gpu.yaml"]
STANDARD_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                   "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                   "helm.sh/chart"}


def _chart_meta() -> dict[str, Any]:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def _container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployments = by_kind(objects, "Deployment")
    assert len(deployments) == 1
    containers = deployments[0]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("values", [None, *SAMPLE_VALUES])
def test_lint_is_clean(helm: Helm, values: str | None) -> None:
    args = ["-f", str(CHART / values)] if values else []
    out = helm.run("lint", "--strict", str(CHART), "--kube-version", "1.34.0", *args)
    assert "0 chart(s) failed" in out.stdout
    assert "[WARNING]" not in out.stdout and "[ERROR]" not in out.stdout


@pytest.mark.parametrize("values", SAMPLE_VALUES)
def test_sample_values_render_every_observability_object(helm: Helm, values: str) -> None:
    kinds = {o["kind"] for o in helm.template("-f", str(CHART / values))}
    assert {"ServiceMonitor", "PrometheusRule", "ConfigMap", "Deployment"} <= kinds


def test_default_render_is_cluster_wide_with_every_object(helm: Helm) -> None:
    objects = helm.template()
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                            "RoleBinding", "Deployment", "Service", "PodDisruptionBudget",
                            "NetworkPolicy"])
    binding = by_kind(objects, "ClusterRoleBinding")[0]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "bem-operator",
                                    "namespace": "bem-system"}]
    assert _env(_container(objects))["BEM_OPERATOR_NAMESPACES"] == ""


def test_namespaced_mode_renders_roles_not_cluster_roles(helm: Helm) -> None:
    objects = helm.template("--set", "watchNamespaces={team-a,team-b}")
    kinds = [o["kind"] for o in objects]
    assert "ClusterRole" not in kinds and "ClusterRoleBinding" not in kinds
    bindings = [b for b in by_kind(objects, "RoleBinding")
                if not b["metadata"]["name"].endswith("-leader-election")]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"][0]["namespace"] == "bem-system"
    assert _env(_container(objects))["BEM_OPERATOR_NAMESPACES"] == "team-a,team-b"


def test_operator_network_policy_admits_metrics_from_the_monitoring_namespace(helm: Helm) -> None:
    objects = helm.template("--set", "networkPolicy.monitoringNamespace=observability",
                            "--set", "operator.metricsPort=9100")
    [policy] = by_kind(objects, "NetworkPolicy")
    deployment = by_kind(objects, "Deployment")[0]
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{
        "ports": [{"protocol": "TCP", "port": 9100}],
        "from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "observability"}}}]}]
    off = helm.template("--set", "networkPolicy.enabled=false")
    assert not by_kind(off, "NetworkPolicy")


def test_rbac_and_service_account_can_be_left_to_the_admin(helm: Helm) -> None:
    objects = helm.template("--set", "rbac.create=false", "--set", "serviceAccount.create=false",
                            "--set", "serviceAccount.name=platform-operator")
    assert {o["kind"] for o in objects} == {"Deployment", "Service", "PodDisruptionBudget",
                                            "NetworkPolicy"}
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-operator"


def test_operator_deployment_is_hardened(helm: Helm) -> None:
    objects = helm.template()
    deployment = by_kind(objects, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(objects)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8000, "health": 8080}
    env = _env(container)
    assert env["BEM_OPERATOR_METRICS_PORT"] == "8000" and env["BEM_OPERATOR_HEALTH_PORT"] == "8080"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_images_are_pinned_to_the_app_version_without_registry_host(helm: Helm) -> None:
    app_version = _chart_meta()["appVersion"]
    container = _container(helm.template())
    assert container["image"] == f"bem-operator:{app_version}"
    assert _env(container)["BEM_RUNTIME_IMAGE"] == f"bem-runtime:{app_version}"


def test_every_object_carries_the_standard_labels(helm: Helm) -> None:
    every = "dashboards.enabled=true,prometheusRule.enabled=true,prometheusAdapter.enabled=true"
    objects = helm.template("--set", every, "--set", "metrics.serviceMonitor.enabled=true")
    for obj in objects:
        missing = STANDARD_LABELS - set(obj["metadata"].get("labels", {}))
        assert not missing, f"{obj['kind']} {obj['metadata']['name']} lacks {missing}"


def test_metrics_service_selects_the_operator_pod(helm: Helm) -> None:
    objects = helm.template("--set", "metrics.serviceMonitor.enabled=true")
    service = by_kind(objects, "Service")[0]
    pod_labels = by_kind(objects, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    monitor = by_kind(objects, "ServiceMonitor")[0]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_packaged_chart_carries_the_crd_and_the_schema(helm: Helm, tmp_path: Path) -> None:
    helm.run("package", str(CHART), "-d", str(tmp_path))
    [package] = tmp_path.glob("bem-operator-*.tgz")
    shown = helm.run("show", "crds", str(package)).stdout
    for crd in ("bemcheckpoint.yaml", "bemservice.yaml"):
        assert (CHART / "crds" / crd).read_text().strip() in shown
    with tarfile.open(package) as archive:
        names = set(archive.getnames())
    assert {"bem-operator/values.schema.json", "bem-operator/dashboards/bem-overview.json",
            "bem-operator/templates/NOTES.txt"} <= names


BAD_VALUES = [
    ("watchNamespaces=team-a", "at '/watchNamespaces': got string, want array"),
    ("watchNamespaces[0]=Team_A", "at '/watchNamespaces/0': 'Team_A' does not match pattern"),
    ("image.pullPolicy=Sometimes", "value must be one of 'Always', 'IfNotPresent', 'Never'"),
    ("replicaCount=0", "at '/replicaCount': minimum"),
    ("leaderElection.enabled=false",
     "replicaCount: more than one operator replica needs leaderElection.enabled"),
    ("leaderElection.leaseName=Bad_Name", "at '/leaderElection/leaseName'"),
    ("podDisruptionBudget.maxUnavailable=0", "at '/podDisruptionBudget/maxUnavailable': minimum"),
    ("networkPolicy.monitoringNamespace=Mon_1", "at '/networkPolicy/monitoringNamespace'"),
    ("operator.metricsPort=70000", "at '/operator/metricsPort': maximum"),
    ("prometheusRule.errorRateThreshold=5", "at '/prometheusRule/errorRateThreshold': maximum"),
    ("metrics.serviceMonitor.interval=soon", "at '/metrics/serviceMonitor/interval'"),
    ("image.tag=latest", "image.tag: 'latest' is not allowed; pin a version"),
    ("runtimeImage.tag=latest", "runtimeImage.tag: 'latest' is not allowed; pin a version"),
]


@pytest.mark.parametrize(("value", "message"), BAD_VALUES, ids=[v for v, _ in BAD_VALUES])
def test_bad_values_are_refused_with_a_message_naming_the_field(
    helm: Helm, value: str, message: str
) -> None:
    out = helm.run("template", "x", str(CHART), "--kube-version", "1.34.0", "--set", value,
                   check=False)
    assert out.returncode != 0, f"--set {value} was accepted"
    assert message in out.stderr

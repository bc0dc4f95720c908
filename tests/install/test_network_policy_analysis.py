"""The NetworkPolicies the operator writes for runtime pods and the chart writes for the operator,
judged by a NetworkPolicy analyser (cyclonus, built from its Go module by
devcluster/build-analyser.sh) over a model of namespaces and pods: which connections the
policies admit. No implementation enforces policies on the local node (see that script), so
this is the check that they say what the docs promise. e2e tier: it needs Go-built binaries
(cyclonus, helm); a build failure fails the test, it never skips."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bem_operator.builders import BuildOptions, build_children
from bem_operator.builders.labels import child_labels
from bem_operator.settings import OperatorSettings

from .support import ROOT, Helm, by_kind

pytestmark = pytest.mark.e2e
sys.path.insert(0, str(ROOT / "tests" / "operator"))
from builders_factory import make_bems  # noqa: E402

OPERATOR_NS = "bem-system"
NAME_LABEL = "kubernetes.io/metadata.name"
HTTP, METRICS, ADMIN = 8080, 9090, 8081
OPERATOR_METRICS = 8000
VERDICT = re.compile(r"IS ALLOWED\?\s*\|\s*(TRUE|FALSE)")


@pytest.fixture(scope="module")
def cyclonus() -> Path:
    out = subprocess.run(["bash", str(ROOT / "devcluster" / "build-analyser.sh")],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"building cyclonus failed:\n{out.stderr[-3000:]}"
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def chart(helm: Helm) -> list[dict[str, Any]]:
    return helm.template(namespace=OPERATOR_NS)


def _operator_pod_labels(chart: list[dict[str, Any]]) -> dict[str, str]:
    return by_kind(chart, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]


def _policies(chart: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chart's policy, and the operator's for two BEMServices (default and custom peers),
    built with the operator settings the chart's Deployment passes (its env, the downward
    API's namespace)."""
    env = {e["name"]: e["value"] for e in by_kind(chart, "Deployment")[0]["spec"]["template"]
           ["spec"]["containers"][0]["env"] if "value" in e}
    settings = OperatorSettings.from_env({**env, "POD_NAMESPACE": OPERATOR_NS})
    options = BuildOptions(operator=settings.operator_pods)
    custom = make_bems({"model": {"claimName": "m"}, "networkPolicy": {
        "from": [{"namespaceSelector": {"matchLabels": {NAME_LABEL: "gateway"}}}],
        "monitoringNamespace": "observability"}}, name="chat", namespace="team-b")
    routed = make_bems({"model": {"claimName": "m"}, "gateway": {
        "parentRefs": [{"name": "edge", "namespace": "gateway-system"}]}}, name="edge",
        namespace="team-c")
    built = [c for bems in (make_bems(name="demo", namespace="team-a"), custom, routed)
             for c in build_children(bems, options) if c["kind"] == "NetworkPolicy"]
    assert len(built) == 3
    return [*by_kind(chart, "NetworkPolicy"), *built]


def _pod(namespace: str, labels: dict[str, str], ip: str) -> dict[str, Any]:
    return {"Internal": {"PodLabels": labels, "NamespaceLabels": {NAME_LABEL: namespace},
                         "Namespace": namespace}, "IP": ip}


CLIENT = {"app": "client"}
RUNTIME_A = ("team-a", child_labels("demo"))
RUNTIME_B = ("team-b", child_labels("chat"))
RUNTIME_C = ("team-c", child_labels("edge"))  # behind the Gateway of spec.gateway


def _cases(operator_labels: dict[str, str]) -> list[tuple[str, tuple, tuple, int, bool]]:
    """(what, source (namespace, labels), destination, port, allowed)."""
    operator = (OPERATOR_NS, operator_labels)
    return [
        ("same-namespace client -> API", ("team-a", CLIENT), RUNTIME_A, HTTP, True),
        ("other namespace -> API", ("other", CLIENT), RUNTIME_A, HTTP, False),
        ("same-namespace client -> metrics", ("team-a", CLIENT), RUNTIME_A, METRICS, False),
        ("same-namespace client -> admin", ("team-a", CLIENT), RUNTIME_A, ADMIN, False),
        ("monitoring -> metrics", ("monitoring", {"app": "prometheus"}), RUNTIME_A, METRICS, True),
        ("monitoring -> API", ("monitoring", {"app": "prometheus"}), RUNTIME_A, HTTP, False),
        ("monitoring -> admin", ("monitoring", {"app": "prometheus"}), RUNTIME_A, ADMIN, False),
        ("operator -> admin", operator, RUNTIME_A, ADMIN, True),
        ("operator -> API", operator, RUNTIME_A, HTTP, False),
        ("another pod of the operator's namespace -> admin", (OPERATOR_NS, CLIENT), RUNTIME_A,
         ADMIN, False),
        ("operator-labelled pod elsewhere -> admin", ("other", operator_labels), RUNTIME_A,
         ADMIN, False),
        ("listed gateway namespace -> API", ("gateway", CLIENT), RUNTIME_B, HTTP, True),
        ("listed gateway namespace -> admin", ("gateway", CLIENT), RUNTIME_B, ADMIN, False),
        ("gateway not listed for the other service -> API", ("gateway", CLIENT), RUNTIME_A,
         HTTP, False),
        ("spec.gateway's Gateway namespace -> API", ("gateway-system", CLIENT), RUNTIME_C, HTTP,
         True),
        ("spec.gateway's Gateway namespace -> admin", ("gateway-system", CLIENT), RUNTIME_C,
         ADMIN, False),
        ("spec.gateway's Gateway namespace -> metrics", ("gateway-system", CLIENT), RUNTIME_C,
         METRICS, False),
        ("Gateway namespace of another service -> API", ("gateway-system", CLIENT), RUNTIME_A,
         HTTP, False),
        ("custom monitoring namespace -> metrics", ("observability", CLIENT), RUNTIME_B, METRICS,
         True),
        ("default monitoring namespace, not chosen -> metrics", ("monitoring", CLIENT), RUNTIME_B,
         METRICS, False),
        ("operator -> admin of the other service", operator, RUNTIME_B, ADMIN, True),
        ("monitoring -> operator metrics", ("monitoring", CLIENT), operator, OPERATOR_METRICS, True),
        ("other namespace -> operator metrics", ("other", CLIENT), operator, OPERATOR_METRICS,
         False),
        ("runtime pod -> operator metrics", RUNTIME_A, operator, OPERATOR_METRICS, False),
    ]


def _verdicts(cyclonus: Path, policies: list[dict[str, Any]], cases: list, tmp: Path) -> list[bool]:
    (tmp / "policies").mkdir()
    for i, policy in enumerate(policies):
        (tmp / "policies" / f"{i}.yaml").write_text(yaml.safe_dump(policy))
    traffic = [{"Source": _pod(*src, f"10.0.0.{2 * i + 1}"),
                "Destination": _pod(*dst, f"10.0.0.{2 * i + 2}"),
                "Protocol": "TCP", "ResolvedPort": port}
               for i, (_what, src, dst, port, _allowed) in enumerate(cases)]
    (tmp / "traffic.json").write_text(json.dumps(traffic))
    out = subprocess.run([str(cyclonus), "analyze", "--mode", "query-traffic",
                          "--policy-path", str(tmp / "policies"),
                          "--traffic-path", str(tmp / "traffic.json")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    verdicts = [v == "TRUE" for v in VERDICT.findall(out.stdout)]
    assert len(verdicts) == len(cases), out.stdout[-3000:]
    return verdicts


def test_each_port_admits_exactly_its_clients(cyclonus: Path, chart: list[dict[str, Any]],
                                              tmp_path: Path) -> None:
    cases = _cases(_operator_pod_labels(chart))
    verdicts = _verdicts(cyclonus, _policies(chart), cases, tmp_path)
    wrong = [f"{what}: analyser says {'allowed' if got else 'refused'}"
             for (what, *_rest, allowed), got in zip(cases, verdicts) if got != allowed]
    assert not wrong, "\n".join(wrong)


def test_without_policies_everything_is_allowed(cyclonus: Path, chart: list[dict[str, Any]],
                                                tmp_path: Path) -> None:
    """The analyser's verdicts come from the policies: with none, all the refused cases pass."""
    cases = _cases(_operator_pod_labels(chart))
    (tmp_path / "none").mkdir()
    assert all(_verdicts(cyclonus, [], cases, tmp_path / "none"))

"""The BEMService CRD against a real API server: what it refuses (and how it says so), what it
accepts, its defaults, kubectl explain, the status and scale subresources, and that the
builders' children of every sample are valid objects for the API server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_support import install_keda_crd

from bem_operator.builders import DEFAULTS, BuildOptions, build_children, selector_string
from bem_operator.builders.options import OperatorPods

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "bemservice.yaml"
# The BEMService samples (checkpoints.yaml holds BEMCheckpoints: tests/install checks it).
SAMPLES = sorted(p for p in (ROOT / "manifests" / "samples").glob("*.yaml")
                 if next(yaml.safe_load_all(p.read_text()))["kind"] == "BEMService")
MODEL = {"claimName": "models"}


@pytest.fixture(scope="module")
def crd(cluster):
    """The CRD from its single source, installed and served; KEDA's ScaledObject CRD too, so
    that the ScaledObject of a KEDA sample meets KEDA's own schema."""
    install_keda_crd(cluster)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/bemservices.bem.ai", "--timeout=60s")
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "bemservices", "-A", check=False).returncode != 0:
        assert time.monotonic() < deadline, "bemservices never appeared in discovery"
        time.sleep(0.5)
    return cluster


def manifest(spec: dict[str, Any], name: str = "svc") -> str:
    return yaml.safe_dump({"apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
                           "metadata": {"name": name}, "spec": spec})


def get_json(cluster, namespace: str, *what: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)


# (id, spec, name, field path the API server must name, part of our message)
INVALID = [
    ("unknown-autoscaling-provider", {"model": MODEL, "autoscaling": {"maxReplicas": 3, "provider": "Knative"}},
     "svc", "spec.autoscaling.provider", 'supported values: "HPA", "KEDA"'),
    ("keda-without-service-monitor", {"model": MODEL, "autoscaling": {"maxReplicas": 3, "provider": "KEDA"},
                                      "monitoring": {"serviceMonitor": False}},
     "svc", "spec.monitoring.serviceMonitor", "provider KEDA"),
    ("replicas-and-autoscaling", {"model": MODEL, "replicas": 2, "autoscaling": {"maxReplicas": 3}},
     "svc", "spec.replicas", "mutually exclusive"),
    ("min-above-max", {"model": MODEL, "autoscaling": {"minReplicas": 5, "maxReplicas": 3}},
     "svc", "spec.autoscaling.minReplicas", "less than or equal"),
    ("request-rate-off-alone", {"model": MODEL, "autoscaling": {"maxReplicas": 3, "requestRate": False}},
     "svc", "spec.autoscaling.requestRate", "something must drive the scaling"),
    ("gpu-product-without-count", {"model": MODEL, "gpu": {"product": "NVIDIA-H100"}},
     "svc", "spec.gpu.product", "count greater than 0"),
    ("surge-with-recreate", {"model": MODEL, "rollout": {"strategy": "Recreate", "maxSurge": 1}},
     "svc", "spec.rollout.strategy", "only to strategy RollingUpdate"),
    ("surge-and-unavailable-zero", {"model": MODEL, "rollout": {"maxSurge": 0, "maxUnavailable": "0%"}},
     "svc", "spec.rollout.maxUnavailable", "cannot both be zero"),
    ("bad-percentage", {"model": MODEL, "rollout": {"maxSurge": "150%"}},
     "svc", "spec.rollout.maxSurge", "percentage"),
    ("pdb-both", {"model": MODEL, "disruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
     "svc", "spec.disruptionBudget.minAvailable", "not both"),
    ("service-port-range", {"model": MODEL, "service": {"port": 70000}},
     "svc", "spec.service.port", "65535"),
    ("node-port-on-cluster-ip", {"model": MODEL, "service": {"nodePort": 30080}},
     "svc", "spec.service.nodePort", "NodePort or LoadBalancer"),
    ("cache-without-secret", {"model": MODEL, "cache": {"ttlSeconds": 30}},
     "svc", "spec.cache.redisUrlSecretRef", "Required value"),
    ("claim-missing", {"model": {"source": "PersistentVolumeClaim"}},
     "svc", "spec.model.claimName", "Required value"),
    ("claim-with-image-source", {"model": {"source": "Image", "claimName": "m"}},
     "svc", "spec.model.claimName", "must be unset"),
    ("path-escapes-models", {"model": {"claimName": "m", "basePath": "a/../../etc"}},
     "svc", "spec.model.basePath", "under /models"),
    # Paths are compared as strings, so each directory must have one spelling.
    ("path-dot-spelling-of-base", {"model": {"claimName": "m", "basePath": "base", "checkpointPath": "./base"}},
     "svc", "spec.model.checkpointPath", "normalised path"),
    ("path-dot-segment", {"model": {"claimName": "m", "basePath": "models/./base"}},
     "svc", "spec.model.basePath", "no '.' or '..' segment"),
    ("path-trailing-slash", {"model": {"claimName": "m", "basePath": "base/", "checkpointPath": "base"}},
     "svc", "spec.model.basePath", "trailing '/'"),
    ("path-doubled-slash", {"model": {"claimName": "m", "checkpointPath": "m//bem"}},
     "svc", "spec.model.checkpointPath", "doubled"),
    ("reserved-env", {"model": MODEL, "runtime": {"env": [{"name": "BEM_PORT", "value": "1"}]}},
     "svc", "spec.runtime.env[0].name", "set by the operator"),
    ("cpu-target-without-request", {"model": MODEL, "autoscaling": {"maxReplicas": 3, "targetCPUUtilization": 60}},
     "svc", "spec.autoscaling.targetCPUUtilization", "requests.cpu"),
    ("request-above-limit", {"model": MODEL, "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}},
     "svc", "spec.resources.requests", "at most"),
    ("negative-quantity", {"model": MODEL, "resources": {"limits": {"memory": "-1Gi"}}},
     "svc", "spec.resources.limits", "must not be negative"),
    ("gpu-in-resources", {"model": MODEL, "resources": {"limits": {"nvidia.com/gpu": 1}}},
     "svc", "spec.resources.limits", "spec.gpu.count"),
    ("unknown-log-level", {"model": MODEL, "runtime": {"logLevel": "verbose"}},
     "svc", "spec.runtime.logLevel", "Unsupported value"),
    ("negative-replicas", {"model": MODEL, "replicas": -1},
     "svc", "spec.replicas", "greater than or equal to 0"),
    ("env-two-sources", {"model": MODEL, "runtime": {"env": [{"name": "P", "valueFrom": {
        "fieldRef": {"fieldPath": "metadata.name"}, "secretKeyRef": {"name": "s", "key": "k"}}}]}},
     "svc", "spec.runtime.env[0].valueFrom", "exactly one of"),
    ("model-missing", {"replicas": 1}, "svc", "spec.model", "Required value"),
    ("netpol-empty-peer", {"model": MODEL, "networkPolicy": {"from": [{}]}},
     "svc", "spec.networkPolicy.from[0]", "set podSelector, namespaceSelector or ipBlock"),
    ("netpol-ip-block-with-selector", {"model": MODEL, "networkPolicy": {"from": [
        {"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}]}},
     "svc", "spec.networkPolicy.from[0].ipBlock", "cannot be combined"),
    ("netpol-bad-cidr", {"model": MODEL, "networkPolicy": {"from": [{"ipBlock": {"cidr": "10.0.0/33"}}]}},
     "svc", "spec.networkPolicy.from[0].ipBlock.cidr", "must be a CIDR"),
    ("netpol-bad-selector", {"model": MODEL, "networkPolicy": {"from": [{"podSelector": {
        "matchExpressions": [{"key": "app", "operator": "In"}]}}]}},
     "svc", "spec.networkPolicy.from[0].podSelector.matchExpressions[0].values", "at least one value"),
    ("netpol-monitoring-namespace", {"model": MODEL, "networkPolicy": {"monitoringNamespace": "Mon_1"}},
     "svc", "spec.networkPolicy.monitoringNamespace", "should match"),
    ("name-not-a-dns-label", {"model": MODEL}, "9lives", "metadata.name", "DNS-1035"),
    ("gateway-and-ingress", {"model": MODEL, "gateway": {"parentRefs": [{"name": "edge"}]},
                             "ingress": {}}, "svc", "spec.ingress", "mutually exclusive"),
    ("gateway-without-parent", {"model": MODEL, "gateway": {"parentRefs": []}},
     "svc", "spec.gateway.parentRefs", "at least 1"),
    ("gateway-backend-timeout-above-request", {"model": MODEL, "gateway": {
        "parentRefs": [{"name": "edge"}], "timeouts": {"request": "60s", "backendRequest": "10m"}}},
     "svc", "spec.gateway.timeouts.backendRequest", "must not exceed request"),
    ("gateway-bad-hostname", {"model": MODEL, "gateway": {"parentRefs": [{"name": "edge"}],
                                                          "hostnames": ["Bem_Host"]}},
     "svc", "spec.gateway.hostnames[0]", "should match"),
    ("gateway-rate-limit-zero", {"model": MODEL, "gateway": {
        "parentRefs": [{"name": "edge"}], "rateLimit": {"average": 0}}},
     "svc", "spec.gateway.rateLimit.average", "greater than or equal to 1"),
    ("gateway-rate-limit-without-average", {"model": MODEL, "gateway": {
        "parentRefs": [{"name": "edge"}], "rateLimit": {"burst": 10}}},
     "svc", "spec.gateway.rateLimit.average", "Required value"),
    ("gateway-hsts-above-two-years", {"model": MODEL, "gateway": {
        "parentRefs": [{"name": "edge"}], "hstsMaxAgeSeconds": 63072001}},
     "svc", "spec.gateway.hstsMaxAgeSeconds", "less than or equal to 63072000"),
    ("trusted-proxy-not-a-cidr", {"model": MODEL, "runtime": {"trustedProxies": ["10.0.0.1"]}},
     "svc", "spec.runtime.trustedProxies[0]", "must be a CIDR"),
]


@pytest.mark.parametrize("spec, name, field, hint", [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_invalid_manifest_is_refused_naming_the_field(crd, namespace, spec, name, field, hint):
    out = crd.kubectl("create", "-n", namespace, "-f", "-", input=manifest(spec, name), check=False)
    assert out.returncode != 0, f"accepted: {out.stdout}"
    assert f"{field}:" in out.stderr, out.stderr
    assert hint in out.stderr, out.stderr
    assert crd.kubectl("get", "-n", namespace, "bems", name, check=False).returncode != 0


def test_every_sample_is_accepted(crd, namespace):
    assert len(SAMPLES) >= 3
    for sample in SAMPLES:
        out = crd.kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(sample), check=False)
        assert out.returncode == 0, f"{sample.name}: {out.stderr}"


def _crd_installed(cluster, name: str) -> bool:
    return cluster.kubectl("get", "crd", name, check=False).returncode == 0


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_children_of_every_sample_are_valid_objects(crd, namespace, sample):
    crd.kubectl("apply", "-n", namespace, "-f", str(sample))
    name = yaml.safe_load(sample.read_text())["metadata"]["name"]
    bems = get_json(crd, namespace, "bems", name)  # with the API server's defaults
    options = BuildOptions(
        service_monitor_available=_crd_installed(crd, "servicemonitors.monitoring.coreos.com"),
        keda_available=_crd_installed(crd, "scaledobjects.keda.sh"),
        gateway_api_available=_crd_installed(crd, "httproutes.gateway.networking.k8s.io"),
        traefik_middleware_available=_crd_installed(crd, "middlewares.traefik.io"),
        operator=OperatorPods("bem-system", (("app.kubernetes.io/name", "bem-operator"),)))
    children = build_children(bems, options)
    body = yaml.safe_dump_all(children)
    out = crd.kubectl("apply", "--server-side", "--field-manager=bem-operator", "-f", "-",
                      input=body, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("serverside-applied") == len(children), out.stdout
    # Stable output: applying the freshly built children again changes nothing.
    again = yaml.safe_dump_all(build_children(get_json(crd, namespace, "bems", name), options))
    for _ in range(5):
        diff = crd.kubectl("diff", "--server-side", "--field-manager=bem-operator", "-f", "-",
                           input=again, check=False)
        if not _live_moved_during_diff(diff.stdout):
            break
    assert diff.returncode == 0, diff.stdout + diff.stderr


def _live_moved_during_diff(diff_text: str) -> bool:
    """kubectl diff reads the live object, then dry-runs the apply against the object as it is
    by then; a controller writing status in between (the Deployment controller does, right after
    creation) shows up as a changed resourceVersion. A dry-run apply never changes it, so such a
    diff says nothing about our children: run it again."""
    return re.search(r"^-\s+resourceVersion:", diff_text, re.MULTILINE) is not None


def test_kubectl_explain_shows_descriptions(crd):
    autoscaling = crd.kubectl("explain", "bemservice.spec.autoscaling").stdout
    assert "bem_requests_per_second" in autoscaling
    for field in ("provider", "minReplicas", "maxReplicas", "targetRequestsPerSecond",
                  "targetCPUUtilization", "behavior"):
        assert field in autoscaling
    provider = crd.kubectl("explain", "bemservice.spec.autoscaling.provider").stdout
    assert "KEDA" in provider and "ScaledObject" in provider and "prometheus" in provider
    status = crd.kubectl("explain", "bems.status.autoscaling").stdout
    assert "desiredReplicas" in status and "currentRequestsPerSecond" in status
    assert "Mutually exclusive with" in autoscaling
    strategy = crd.kubectl("explain", "bems.spec.rollout.strategy").stdout
    assert "Recreate" in strategy
    status = crd.kubectl("explain", "bems.status.conditions").stdout
    assert "reason" in status and "observedGeneration" in status


def test_defaults_are_applied(crd, namespace):
    spec = {
        "model": MODEL, "autoscaling": {"maxReplicas": 3}, "rollout": {}, "disruptionBudget": {},
        "service": {}, "monitoring": {}, "runtime": {},
        "auth": {"apiKeySecretRef": {"name": "keys"}}, "cache": {"redisUrlSecretRef": {"name": "redis"}},
        "gateway": {"parentRefs": [{"name": "edge"}]},
    }
    crd.kubectl("create", "-n", namespace, "-f", "-", input=manifest(spec))
    # spec.ingress excludes spec.gateway: its defaults are read from a second object.
    crd.kubectl("create", "-n", namespace, "-f", "-",
                input=manifest({"model": MODEL, "ingress": {}}, "ingress"))
    got = get_json(crd, namespace, "bems", "svc")["spec"]
    got["ingress"] = get_json(crd, namespace, "bems", "ingress")["spec"]["ingress"]
    paths = {"auth.key": "auth.apiKeySecretRef.key", "cache.key": "cache.redisUrlSecretRef.key"}
    for key, value in DEFAULTS.items():
        if key in ("replicas", "disruptionBudget.maxUnavailable"):  # applied by the builders only
            continue
        node: Any = got
        for part in paths.get(key, key).split("."):
            node = node[part]
        assert node == value, key
    assert "replicas" not in got


def test_sections_are_defaulted_even_when_omitted(crd, namespace):
    crd.kubectl("create", "-n", namespace, "-f", "-", input=manifest({"model": MODEL}))
    got = get_json(crd, namespace, "bems", "svc")["spec"]
    assert got["service"] == {"type": "ClusterIP", "port": 8080}
    assert got["rollout"] == {"strategy": "RollingUpdate"}
    assert got["disruptionBudget"] == {"enabled": True}
    assert got["monitoring"] == {"serviceMonitor": True, "interval": "30s"}
    assert got["runtime"] == {"logLevel": "info", "maxCheckpoints": 8, "startupTimeoutSeconds": 600}
    assert got["model"] == {"source": "PersistentVolumeClaim", "claimName": "models",
                            "basePath": "base", "checkpointPath": "bem"}
    for absent in ("replicas", "autoscaling", "gpu", "auth", "cache"):
        assert absent not in got


def test_scale_subresource_follows_spec_replicas(crd, namespace):
    crd.kubectl("create", "-n", namespace, "-f", "-", input=manifest({"model": MODEL, "replicas": 1}))
    crd.kubectl("scale", "-n", namespace, "bems/svc", "--replicas=3")
    assert get_json(crd, namespace, "bems", "svc")["spec"]["replicas"] == 3
    status = {"replicas": 3, "readyReplicas": 2, "selector": selector_string("svc"), "phase": "Progressing",
              "endpoint": f"http://svc.{namespace}.svc:8080", "observedGeneration": 2,
              "conditions": [{"type": "Ready", "status": "False", "reason": "PodsNotReady",
                              "message": "2 of 3 pods are ready", "lastTransitionTime": "2026-01-01T00:00:00Z",
                              "observedGeneration": 2}]}
    crd.kubectl("patch", "-n", namespace, "bems/svc", "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": status}))
    scale = json.loads(crd.kubectl(
        "get", "--raw", f"/apis/bem.ai/v1alpha1/namespaces/{namespace}/bemservices/svc/scale").stdout)
    assert scale["spec"]["replicas"] == 3
    assert scale["status"] == {"replicas": 3, "selector": selector_string("svc")}
    table = crd.kubectl("get", "-n", namespace, "bems", "svc").stdout.split()
    assert table[:5] == ["NAME", "READY", "REPLICAS", "PHASE", "ENDPOINT"]
    assert table[6:10] == ["svc", "2", "3", "Progressing"]


def test_status_is_only_written_through_the_subresource(crd, namespace):
    crd.kubectl("create", "-n", namespace, "-f", "-", input=manifest({"model": MODEL}))
    crd.kubectl("patch", "-n", namespace, "bems/svc", "--type=merge", "-p", '{"status": {"phase": "Ready"}}')
    assert "status" not in get_json(crd, namespace, "bems", "svc")


def test_kubectl_scale_is_refused_while_autoscaling(crd, namespace):
    crd.kubectl("create", "-n", namespace, "-f", "-",
                input=manifest({"model": MODEL, "autoscaling": {"minReplicas": 2, "maxReplicas": 5}}))
    out = crd.kubectl("scale", "-n", namespace, "bems/svc", "--replicas=7", check=False)
    assert out.returncode != 0
    assert "spec.replicas:" in out.stderr and "mutually exclusive" in out.stderr
    assert "replicas" not in get_json(crd, namespace, "bems", "svc")["spec"]


def test_switching_from_autoscaling_to_fixed_replicas(crd, namespace):
    crd.kubectl("create", "-n", namespace, "-f", "-",
                input=manifest({"model": MODEL, "autoscaling": {"maxReplicas": 5}}))
    crd.kubectl("patch", "-n", namespace, "bems/svc", "--type=merge",
                "-p", '{"spec": {"autoscaling": null, "replicas": 2}}')
    spec = get_json(crd, namespace, "bems", "svc")["spec"]
    assert spec["replicas"] == 2 and "autoscaling" not in spec
    crd.kubectl("scale", "-n", namespace, "bems/svc", "--replicas=4")
    assert get_json(crd, namespace, "bems", "svc")["spec"]["replicas"] == 4

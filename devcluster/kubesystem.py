"""What kube-system holds in any cluster: CoreDNS (the cluster DNS) and metrics-server.

`bem-devcluster up` installs both when the real node runs (the kwok-only cluster runs no pods
that would resolve a name). Made here like the other add-ons, nothing pulled:
- binaries: CoreDNS (trimmed to the plugins below, no `forward`) and metrics-server, static,
  built from Go modules by build-addons.sh;
- images: docker/static-binary.Dockerfile, the binary alone on an empty root;
- manifests: CoreDNS's written here (its module ships none), metrics-server's own
  (manifests/base through `kubectl kustomize`), patched for this cluster.

CoreDNS answers cluster.local (and reverse lookups) from the API and NXDOMAIN for every other
name: no query leaves the machine. The kubelet writes kube-dns's fixed ClusterIP into every
pod's resolv.conf (realnode.kubelet_config).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from devcluster import addons, images
from devcluster.client import Client
from devcluster.network import CLUSTER_DNS_IP, CLUSTER_DOMAIN
from devcluster.nodes import REAL_NODE
from devcluster.realnode import NODE_LABEL, NodeLayout, wait_served_here

NS = "kube-system"
COREDNS_VERSION = addons.version_of("COREDNS_VERSION")
METRICS_SERVER_VERSION = addons.version_of("METRICS_SERVER_VERSION")
COREDNS = addons.binary_image("bem-coredns", COREDNS_VERSION, "coredns",
                              dockerfile="docker/static-binary.Dockerfile")
METRICS_SERVER = addons.binary_image("bem-metrics-server", METRICS_SERVER_VERSION,
                                     "metrics-server",
                                     dockerfile="docker/static-binary.Dockerfile")
IMAGES = (COREDNS, METRICS_SERVER)
DNS_PORT = 1053  # unprivileged inside the pod; the Service maps 53 to it
CORE_LABELS = {"k8s-app": "kube-dns"}
# The real node only: the kwok nodes' addresses are served by nothing on this machine.
ON_REAL_NODE = {NODE_LABEL: "real"}
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")

COREFILE = f"""\
{" ".join(f"{zone}:{DNS_PORT}" for zone in (CLUSTER_DOMAIN, *REVERSE_ZONES))} {{
    errors
    health :8080
    ready :8181
    kubernetes
    cache 30
    loadbalance
}}
.:{DNS_PORT} {{
    errors
    template ANY ANY {{
        rcode NXDOMAIN
    }}
}}
"""

# A non-root container with nothing to write and no privilege to gain.
RESTRICTED = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534,
              "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS, **extra}


def coredns_manifests() -> list[dict[str, Any]]:
    """ServiceAccount, a ClusterRole that may list and watch what the kubernetes plugin reads
    (and no more), the Corefile, the Deployment and the kube-dns Service."""
    probe = {"periodSeconds": 2, "failureThreshold": 3}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("coredns")},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["services", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": NS}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("coredns"),
         "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": _meta("coredns", labels=CORE_LABELS),
         "spec": {"replicas": 1, "selector": {"matchLabels": CORE_LABELS},
                  "template": {"metadata": {"labels": CORE_LABELS}, "spec": {
                      "serviceAccountName": "coredns",
                      "priorityClassName": "system-cluster-critical",
                      "nodeSelector": ON_REAL_NODE,
                      # It resolves nothing itself: no resolv.conf of the host's.
                      "dnsPolicy": "Default",
                      "containers": [{
                          "name": "coredns", "image": COREDNS.ref,
                          "imagePullPolicy": "IfNotPresent",
                          "args": ["-conf", "/etc/coredns/Corefile"],
                          "ports": [{"name": "dns", "containerPort": DNS_PORT, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": DNS_PORT,
                                     "protocol": "TCP"}],
                          "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                                        "limits": {"memory": "128Mi"}},
                          "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                             **probe},
                          "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                            **probe, "failureThreshold": 5},
                          "securityContext": RESTRICTED,
                          "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns",
                                            "readOnly": True}]}],
                      "volumes": [{"name": "config", "configMap": {"name": "coredns"}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": _meta("kube-dns", labels=CORE_LABELS),
         "spec": {"clusterIP": CLUSTER_DNS_IP, "selector": CORE_LABELS,
                  "ports": [{"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "targetPort": "dns-tcp",
                             "protocol": "TCP"}]}},
    ]


# The cluster CA signs the kubelet's serving cert (certs.py) and is every pod's
# service-account ca.crt (the controller manager's --root-ca-file): metrics-server verifies
# the kubelet with it.
SA_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
METRICS_SERVER_ARGS = [
    "--cert-dir=/tmp",
    "--secure-port=10250",
    "--kubelet-preferred-address-types=InternalIP",
    "--kubelet-use-node-status-port",
    f"--kubelet-certificate-authority={SA_CA}",
    # Only the real node has a kubelet; a kwok node's address is served by nothing here.
    f"--node-selector={NODE_LABEL}=real",
    # The least it allows (above the request timeout): the HPA sees load sooner.
    "--metric-resolution=10s",
    "--kubelet-request-timeout=5s",
]


def metrics_server_manifests(kubectl: Path) -> list[dict[str, Any]]:
    """metrics-server's manifests/base (RBAC, Deployment, Service, the v1beta1.metrics.k8s.io
    APIService), with the local image, the args above and the pod on the real node.

    The APIService keeps upstream's insecureSkipTLSVerify: metrics-server serves a cert it
    signs itself at start (as KEDA's adapter does here)."""
    docs = addons.kustomized(kubectl, addons.source("metrics-server") / "manifests" / "base")
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        (container,) = addons.containers(doc)
        addons.local_image(container, METRICS_SERVER)
        container["args"] = list(METRICS_SERVER_ARGS)
        container["securityContext"] = {**container["securityContext"], **RESTRICTED}
        container["readinessProbe"].update(initialDelaySeconds=0, periodSeconds=2)
        pod = doc["spec"]["template"]["spec"]
        pod["nodeSelector"] = ON_REAL_NODE
    return docs


def manifests(kubectl: Path) -> list[dict[str, Any]]:
    return [*coredns_manifests(), *metrics_server_manifests(kubectl)]


def install(client: Client, lay: NodeLayout, timeout: float = 180.0) -> float:
    """Import the images into the real node, apply both, and wait until CoreDNS answers
    through kube-dns's ClusterIP (metrics-server gets ready on its own: `kubectl top` then
    works). Returns seconds."""
    began = time.monotonic()
    images.ensure_all(lay, IMAGES)
    addons.apply(client, manifests(client.kubectl_bin))
    left = max(10.0, timeout - (time.monotonic() - began))
    client.kubectl("rollout", "status", "-n", NS, "deployment/coredns", f"--timeout={int(left)}s",
                   timeout=left + 10)
    wait_served_here(CLUSTER_DNS_IP)
    seconds = time.monotonic() - began
    addons.log(f"CoreDNS {COREDNS_VERSION} and metrics-server {METRICS_SERVER_VERSION} on "
               f"{REAL_NODE} in {seconds:.0f}s (kube-dns {CLUSTER_DNS_IP})")
    return seconds

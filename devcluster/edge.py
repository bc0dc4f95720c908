"""The local cluster's edge: a real Gateway API implementation (Traefik) in front of the
BEMServices, HTTPS only, as a production cluster has one.

Made here like the other add-ons, nothing pulled:
- the binary: Traefik built from its Go module by build-edge.sh (which says what it mends);
- the image: docker/static-binary.Dockerfile, the binary alone on an empty root;
- CRDs: Gateway API's standard channel (fetch-gateway-api.sh) and Traefik's own traefik.io
  kinds (its kubernetescrd provider watches them: a BEMService's rate limit is a Middleware);
- the rest written here: Traefik's RBAC (read-only but the Gateway API statuses it reports),
  its Deployment and Service, GatewayClass `traefik`, and Gateway `edge/edge`.

The Gateway has two listeners. `https` (port 443 of the Service) terminates TLS for
*.edge.test with a certificate of the cluster's own edge CA (certs.generate_edge, kept in
the state folder for clients to verify with) and takes routes from every namespace. `http`
(port 80) takes routes from its own namespace only, and one route there redirects every
request to HTTPS. Traefik's entry points listen on the listeners' ports (8000, 8443:
unprivileged), as its Gateway provider requires.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster import addons, images
from devcluster.certs import generate_edge
from devcluster.health import wait_until
from devcluster.kubesystem import ON_REAL_NODE, RESTRICTED
from devcluster.realnode import NodeLayout, wait_served_here

BUILD_SCRIPT = Path(__file__).with_name("build-edge.sh")
GATEWAY_API_SCRIPT = Path(__file__).with_name("fetch-gateway-api.sh")
NS = "edge"
GATEWAY = "edge"
GATEWAY_CLASS = "traefik"
CONTROLLER_NAME = "traefik.io/gateway-controller"
DOMAIN = "edge.test"  # reserved for testing (RFC 2606): never a real name
TLS_SECRET = "edge-tls"
LABELS = {"app.kubernetes.io/name": "traefik"}
# Listener -> (entry point, its port in the pod, the Service's port).
LISTENERS = {"http": ("web", 8000, 80), "https": ("websecure", 8443, 443)}
PING_PORT = 8082

if TYPE_CHECKING:
    from devcluster.cluster import DevCluster


def version() -> str:
    return addons.version_of("TRAEFIK_VERSION", BUILD_SCRIPT)


def build_dir() -> Path:
    """Traefik's binary and CRDs (a Go build of minutes, once per version)."""
    return Path(addons.run_script(BUILD_SCRIPT))


def gateway_api_dir() -> Path:
    """Gateway API's standard-channel files (its CRDs, and the ValidatingAdmissionPolicy that
    guards their upgrades), fetched once per version."""
    return Path(addons.run_script(GATEWAY_API_SCRIPT))


TRAEFIK = images.Image("bem-traefik", "docker/static-binary.Dockerfile", None,
                       (("ENTRYPOINT", "traefik"),), tag=version(),
                       payload=lambda: {"bin/traefik": build_dir() / "traefik"})
IMAGES = (TRAEFIK,)


def ca_file(cluster: DevCluster) -> Path:
    """The edge CA's certificate: what a client verifies the Gateway with."""
    return cluster.state_dir / "edge-pki" / "ca.crt"


def crds() -> list[dict[str, Any]]:
    files = [*sorted(gateway_api_dir().glob("*.yaml")),
             *sorted((build_dir() / "crds").glob("*.yaml"))]
    return [doc for path in files for doc in addons.load_docs(path.read_text())]


def traefik_args() -> list[str]:
    args = []
    for entry, port, _ in LISTENERS.values():
        # A header whose name aliases another's (X_Forwarded_For) never reaches a runtime.
        args += [f"--entryPoints.{entry}.address=:{port}",
                 f"--entryPoints.{entry}.http.aliasHeadersStrategy=delete"]
    return [
        *args,
        f"--entryPoints.ping.address=:{PING_PORT}", "--ping.entryPoint=ping",
        "--entryPoints.ping.http.aliasHeadersStrategy=delete",
        "--providers.kubernetesgateway=true",
        # Gateway.status.addresses: the Service clients reach it by.
        f"--providers.kubernetesgateway.statusAddress.service.name={NS}",
        f"--providers.kubernetesgateway.statusAddress.service.namespace={NS}",
        "--providers.kubernetescrd=true",
        # Names of what it generates that cannot collide across namespaces.
        "--providers.kubernetescrd.safeNaming=true",
        "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
        "--log.level=INFO", "--log.noColor=true",
    ]


def rbac() -> list[dict[str, Any]]:
    """What Traefik's two providers read, and the Gateway API statuses it writes."""
    read = ["get", "list", "watch"]
    gateway_kinds = ["gatewayclasses", "gateways", "httproutes", "grpcroutes", "tlsroutes",
                     "referencegrants", "backendtlspolicies"]
    rules = [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
        {"apiGroups": [""], "resources": ["services", "secrets", "configmaps", "nodes"],
         "verbs": read},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
         "verbs": ["list", "watch"]},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": gateway_kinds, "verbs": read},
        {"apiGroups": ["gateway.networking.k8s.io"],
         "resources": [f"{kind}/status" for kind in gateway_kinds], "verbs": ["update"]},
        {"apiGroups": ["traefik.io"], "resources": [
            "middlewares", "middlewaretcps", "ingressroutes", "traefikservices", "ingressroutetcps",
            "ingressrouteudps", "tlsoptions", "tlsstores", "serverstransports",
            "serverstransporttcps"], "verbs": read},
    ]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "traefik",
                                                                    "namespace": NS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "bem-edge-traefik"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "bem-edge-traefik"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "bem-edge-traefik"},
         "subjects": [{"kind": "ServiceAccount", "name": "traefik", "namespace": NS}]},
    ]


def workload() -> list[dict[str, Any]]:
    probe = {"httpGet": {"path": "/ping", "port": PING_PORT}, "periodSeconds": 2}
    ports = [{"name": entry, "containerPort": port} for entry, port, _ in LISTENERS.values()]
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "traefik", "namespace": NS, "labels": LABELS},
         "spec": {"replicas": 1, "selector": {"matchLabels": LABELS},
                  "template": {"metadata": {"labels": LABELS}, "spec": {
                      "serviceAccountName": "traefik",
                      "nodeSelector": ON_REAL_NODE,
                      "containers": [{
                          "name": "traefik", "image": TRAEFIK.ref,
                          "imagePullPolicy": "IfNotPresent",
                          "args": traefik_args(),
                          "ports": ports,
                          "resources": {"requests": {"cpu": "20m", "memory": "64Mi"},
                                        "limits": {"memory": "512Mi"}},
                          "readinessProbe": {**probe, "failureThreshold": 2},
                          "livenessProbe": {**probe, "failureThreshold": 5},
                          "securityContext": RESTRICTED,
                          "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
                      "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": NS, "namespace": NS, "labels": LABELS},
         "spec": {"selector": LABELS, "ports": [
             {"name": name, "port": service_port, "targetPort": entry}
             for name, (entry, _, service_port) in LISTENERS.items()]}},
    ]


def gateway() -> list[dict[str, Any]]:
    http_port, https_port = LISTENERS["http"][1], LISTENERS["https"][1]
    group = "gateway.networking.k8s.io"
    return [
        {"apiVersion": f"{group}/v1", "kind": "GatewayClass",
         "metadata": {"name": GATEWAY_CLASS}, "spec": {"controllerName": CONTROLLER_NAME}},
        {"apiVersion": f"{group}/v1", "kind": "Gateway",
         "metadata": {"name": GATEWAY, "namespace": NS},
         "spec": {"gatewayClassName": GATEWAY_CLASS, "listeners": [
             {"name": "http", "protocol": "HTTP", "port": http_port,
              "allowedRoutes": {"namespaces": {"from": "Same"}}},
             {"name": "https", "protocol": "HTTPS", "port": https_port,
              "hostname": f"*.{DOMAIN}",
              "tls": {"mode": "Terminate",
                      "certificateRefs": [{"kind": "Secret", "name": TLS_SECRET}]},
              "allowedRoutes": {"namespaces": {"from": "All"}}}]}},
        # Plain HTTP answers one thing: the same URL in HTTPS.
        {"apiVersion": f"{group}/v1", "kind": "HTTPRoute",
         "metadata": {"name": "https-redirect", "namespace": NS},
         "spec": {"parentRefs": [{"name": GATEWAY, "sectionName": "http"}],
                  "rules": [{"filters": [{"type": "RequestRedirect", "requestRedirect": {
                      "scheme": "https", "statusCode": 301}}]}]}},
    ]


def tls_secret(cluster: DevCluster) -> dict[str, Any]:
    pki = generate_edge(ca_file(cluster).parent, DOMAIN)
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": TLS_SECRET, "namespace": NS},
            "stringData": {"tls.crt": pki.crt("edge").read_text(),
                           "tls.key": pki.key("edge").read_text()}}


def manifests() -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
            *crds(), *rbac(), *workload(), *gateway()]


def address(cluster: DevCluster) -> str:
    """The Gateway's Service address (a ClusterIP), once kube-proxy serves it here."""
    ip = cluster.kubectl("get", "service", NS, "-n", NS, "-o",
                         "jsonpath={.spec.clusterIP}").stdout.strip()
    wait_served_here(ip)
    return ip


def _programmed(cluster: DevCluster) -> bool:
    out = cluster.kubectl("get", "gateway", GATEWAY, "-n", NS, "-o",
                          "jsonpath={.status.conditions[?(@.type=='Programmed')].status}",
                          check=False)
    return out.stdout.strip() == "True"


def install(cluster: DevCluster, timeout: float = 180.0) -> float:
    """Import the image, apply the CRDs, Traefik and the Gateway (with a fresh certificate
    when the edge CA is new), and wait until the Gateway is Programmed and its Service is
    served on this machine. Returns seconds."""
    began = time.monotonic()
    images.ensure_all(NodeLayout(cluster.state_dir), IMAGES)
    docs = manifests()
    if not ca_file(cluster).is_file():
        docs.append(tls_secret(cluster))
    addons.apply_in_order(cluster, docs)
    left = max(10.0, timeout - (time.monotonic() - began))
    cluster.kubectl("rollout", "status", "-n", NS, "deployment/traefik",
                    f"--timeout={int(left)}s", timeout=left + 10)
    wait_until(f"Gateway {NS}/{GATEWAY} Programmed", lambda: _programmed(cluster),
               timeout=max(10.0, timeout - (time.monotonic() - began)), interval=0.5)
    ip = address(cluster)
    seconds = time.monotonic() - began
    addons.log(f"Traefik {version()} and Gateway {NS}/{GATEWAY} (https://*.{DOMAIN} at "
               f"{ip}:443) in {seconds:.0f}s")
    return seconds

"""The edge on real pods (issue 21): a BEMService reached in HTTPS through the local Gateway
(Traefik built from its Go module, devcluster/edge.py), by the HTTPRoute and the Middleware
the operator writes from spec.gateway.

From this machine every request goes to the Gateway's ClusterIP (checked served here first)
with the route's host name as SNI and Host, and the certificate verified against the edge's
own CA. The two rate-limited clients are two runtime pods (kubectl exec), so the Gateway sees
two client addresses.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from typing import Any

import pytest
from bem_operator.builders.pod import CONTAINER_NAME

from devcluster import edge
from devcluster.health import wait_until
from devcluster.traffic import GENERATE, Load, Pinned, post

from .conftest import OPERATOR_NS
from .support import apply, baked_service, bems_ready, figure, get_json, rollout_done, runtime_pods

SERVICE = "chat"
HOST = f"{SERVICE}.{edge.DOMAIN}"
HSTS = "max-age=31536000; includeSubDomains"
# The runtime's own (bem_runtime/middlewares.py): they must come through the Gateway.
RUNTIME_HEADERS = ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy")
RATE = {"average": 2, "burst": 3}


@pytest.fixture(scope="module")
def gateway(real_cluster: Any, operator_release: str) -> Pinned:
    figure(f"edge (Traefik {edge.version()}, Gateway {edge.NS}/{edge.GATEWAY}) installed in "
           f"{edge.install(real_cluster):.0f}s")
    # The operator watches the optional kinds the cluster serves when it starts (as after
    # KEDA's install): restarted, it watches the HTTPRoutes it writes.
    operator = ("deployment", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/name=bem-operator")
    real_cluster.kubectl("rollout", "restart", *operator)
    real_cluster.kubectl("rollout", "status", *operator, "--timeout=180s", timeout=190)
    return Pinned(edge.address(real_cluster), str(edge.ca_file(real_cluster)))


def service(**gateway: Any) -> dict[str, Any]:
    spec = {"parentRefs": [{"name": edge.GATEWAY, "namespace": edge.NS}], "hostnames": [HOST],
            **gateway}
    return baked_service(SERVICE, replicas=2, gateway=spec)


def condition(bems: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in bems["status"]["conditions"] if c["type"] == kind)


def gateway_condition(cluster: Any, ns: str, status: str, timeout: float = 60) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(condition(get_json(cluster, "bemservice", SERVICE, "-n", ns), "Gateway"))
        return seen["status"] == status
    wait_until(f"the Gateway condition {status}", reached, timeout=timeout, interval=0.5)
    return seen


def get(via: Pinned, host: str, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = via.connection(host, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def plain_http(via: Pinned, host: str, path: str) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection(via.address, 80, timeout=30)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp.status, dict(resp.getheaders())
    finally:
        conn.close()


def stream_chat(via: Pinned, model: str) -> tuple[int, str, list[str]]:
    """A streamed chat completion: (status, content type, the SSE data lines)."""
    conn = via.connection(HOST, timeout=60)
    try:
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}],
                "max_tokens": 4, "temperature": 0, "stream": True}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        text = resp.read().decode()
        data = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
        return resp.status, resp.getheader("Content-Type") or "", data
    finally:
        conn.close()


# Run in a runtime pod (kubectl exec): `count` requests as fast as one client sends them to
# the Gateway's ClusterIP (SNI and Host the route's name, the certificate not checked: the
# verified path is tested from this machine), printing their statuses and the seconds they
# took as JSON.
CLIENT = """
import http.client, json, socket, ssl, sys, time
address, host, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
began = time.monotonic()
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
statuses = []
for _ in range(count):
    sock = socket.create_connection((address, 443), 10)
    conn = http.client.HTTPSConnection(host, 443, timeout=10)
    conn.sock = context.wrap_socket(sock, server_hostname=host)
    conn.request("GET", "/v1/models")
    resp = conn.getresponse()
    resp.read()
    statuses.append(resp.status)
    conn.close()
print(json.dumps({"statuses": statuses, "seconds": time.monotonic() - began}))
"""


def from_pod(cluster: Any, ns: str, pod: str, address: str, count: int
             ) -> tuple[list[int], float]:
    out = cluster.kubectl("exec", "-n", ns, pod, "-c", CONTAINER_NAME, "--", "python3", "-c",
                          CLIENT, address, HOST, str(count), timeout=120)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return found["statuses"], found["seconds"]


def test_https_through_the_gateway_to_runtime_pods(real_cluster: Any, operator_release: str,
                                                   real_ns: str, gateway: Pinned) -> None:
    cluster, ns = real_cluster, real_ns
    apply(cluster, ns, service())
    bems_ready(cluster, ns, SERVICE)
    accepted = gateway_condition(cluster, ns, "True")
    assert accepted["reason"] == "RouteAccepted", accepted
    bems = get_json(cluster, "bemservice", SERVICE, "-n", ns)
    assert bems["status"]["gateway"]["url"] == f"https://{HOST}/"
    assert bems["status"]["gateway"]["parents"] == [
        {"gateway": f"{edge.NS}/{edge.GATEWAY}", "accepted": "True", "resolvedRefs": "True"}]

    # HTTPS, verified against the edge CA: answered by a runtime pod, with HSTS from the edge
    # and the runtime's own security headers. Traefik may take a moment to program the route
    # after it reports it accepted.
    wait_until("the route to answer", lambda: get(gateway, HOST, "/v1/models")[0] == 200,
               timeout=30, interval=0.5)
    status, headers, body = get(gateway, HOST, "/v1/models")
    assert status == 200, body
    model = json.loads(body)["data"][0]["id"]
    assert headers.get("Strict-Transport-Security") == HSTS, headers
    for name in RUNTIME_HEADERS:
        assert name in headers, (name, headers)
    conn = gateway.connection(HOST)
    conn.connect()
    assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
    conn.close()
    status, body = post(f"https://{HOST}/v1/generate", GENERATE, via=gateway)
    assert status == 200 and body["text"], body

    # Streaming through the Gateway: several SSE events, then [DONE].
    status, content_type, data = stream_chat(gateway, model)
    assert status == 200 and content_type.startswith("text/event-stream"), (status, data)
    assert data[-1] == "[DONE]" and len(data) >= 3, data
    assert all("choices" in json.loads(d) for d in data[:-1])

    # The certificate is the edge CA's: a client trusting only the system CAs refuses it.
    with pytest.raises(ssl.SSLCertVerificationError), \
            socket.create_connection((gateway.address, 443), 10) as sock:
        ssl.create_default_context().wrap_socket(sock, server_hostname=HOST)
    # Plain HTTP answers with the same URL in HTTPS; a host no route names is 404.
    status, headers = plain_http(gateway, HOST, "/v1/models?x=1")
    assert status == 301 and headers["Location"] == f"https://{HOST}/v1/models?x=1", headers
    assert get(gateway, f"nobody.{edge.DOMAIN}", "/v1/models")[0] == 404

    # A rolling update behind the Gateway loses no request.
    with Load(f"https://{HOST}", max_requests=1500, max_seconds=300, pause=0.1,
              via=gateway) as load:
        load.wait_for(5)
        before = {p["metadata"]["name"] for p in runtime_pods(cluster, ns, SERVICE)}
        cluster.kubectl("patch", "bemservice", SERVICE, "-n", ns, "--type=merge", "-p",
                        json.dumps({"spec": {"runtime": {"logLevel": "debug"}}}))
        wait_until("new pods", lambda: not before & {
            p["metadata"]["name"] for p in runtime_pods(cluster, ns, SERVICE)}, timeout=300,
            interval=1)
        rollout_done(cluster, ns, SERVICE)
        sent = len(load.results)
        load.wait_for(sent + 5)
    figure(f"rolling update behind the Gateway: {load.summary()}")
    assert len(load.results) >= 20 and not load.failures, load.failures[:5]

    # Per-client limits at the Gateway: spec.gateway.rateLimit becomes a Traefik Middleware
    # on the route, keyed on the client's address. One client past its budget is refused
    # (429) while another, behind the same Gateway, is not.
    apply(cluster, ns, service(rateLimit=RATE))
    middleware = get_json(cluster, "middlewares.traefik.io", "-n", ns)["items"]
    assert [m["spec"]["rateLimit"]["average"] for m in middleware] == [RATE["average"]]
    pods = sorted(p["metadata"]["name"] for p in runtime_pods(cluster, ns, SERVICE))
    wait_until("the first client rate-limited at the Gateway (the Middleware programmed)",
               lambda: 429 in from_pod(cluster, ns, pods[0], gateway.address, 10)[0],
               timeout=60, interval=1)
    limited, took = from_pod(cluster, ns, pods[0], gateway.address, 30)
    other, _ = from_pod(cluster, ns, pods[1], gateway.address, RATE["burst"])
    figure(f"30 requests from one client in {took:.1f}s: {limited.count(200)} answered, "
           f"{limited.count(429)} refused (429); {RATE['burst']} from another at once: {other}")
    # The token bucket: at most its burst, then `average` a second (one more for the refill
    # tick), whatever this machine's speed; everything else refused, nothing failed.
    assert set(limited) <= {200, 429} and 429 in limited, limited
    assert limited.count(200) <= RATE["burst"] + RATE["average"] * took + 1, (took, limited)
    assert other == [200] * RATE["burst"], other

    # A Gateway that does not exist: the route is written, and the status says why nothing
    # reaches the service through it.
    apply(cluster, ns, baked_service(SERVICE, replicas=2, gateway={
        "parentRefs": [{"name": "missing", "namespace": edge.NS}], "hostnames": [HOST]}))
    pending = gateway_condition(cluster, ns, "False")
    assert pending["reason"] == "GatewayPending", pending
    assert f"{edge.NS}/missing" in pending["message"], pending
    started = time.monotonic()
    wait_until("the route gone from the Gateway", lambda: get(
        gateway, HOST, "/v1/models")[0] == 404, timeout=30, interval=0.5)
    figure(f"route moved off the Gateway in {time.monotonic() - started:.1f}s")

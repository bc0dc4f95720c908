"""The local edge's manifests (devcluster/edge.py), without a cluster: Traefik's entry points
are the Gateway's listener ports, it may write nothing but Gateway API statuses, it runs
restricted, plain HTTP only redirects, and the certificate is the edge CA's for *.edge.test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509

from devcluster import edge
from devcluster.certs import generate_edge
from devcluster.kubesystem import RESTRICTED


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_listeners_are_traefiks_entry_points() -> None:
    args = edge.traefik_args()
    [gateway] = by_kind(edge.gateway(), "Gateway")
    [service] = by_kind(edge.workload(), "Service")
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    for listener in gateway["spec"]["listeners"]:
        entry, pod_port, service_port = edge.LISTENERS[listener["name"]]
        assert listener["port"] == pod_port  # Traefik maps a listener to the same-port entry point
        assert f"--entryPoints.{entry}.address=:{pod_port}" in args
        assert (ports[listener["name"]]["port"], ports[listener["name"]]["targetPort"]) == \
            (service_port, entry)
    https = next(li for li in gateway["spec"]["listeners"] if li["name"] == "https")
    assert https["tls"]["certificateRefs"] == [{"kind": "Secret", "name": edge.TLS_SECRET}]
    assert https["hostname"] == f"*.{edge.DOMAIN}"
    http = next(li for li in gateway["spec"]["listeners"] if li["name"] == "http")
    assert http["allowedRoutes"]["namespaces"]["from"] == "Same"  # no app route on plain HTTP
    assert "--providers.kubernetesgateway=true" in args and "--providers.kubernetescrd=true" in args


def test_plain_http_only_redirects_to_https() -> None:
    [route] = by_kind(edge.gateway(), "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": edge.GATEWAY, "sectionName": "http"}]
    [rule] = route["spec"]["rules"]
    assert "backendRefs" not in rule
    assert rule["filters"] == [{"type": "RequestRedirect", "requestRedirect": {
        "scheme": "https", "statusCode": 301}}]


def test_traefik_writes_only_gateway_statuses_and_runs_restricted() -> None:
    [role] = by_kind(edge.rbac(), "ClusterRole")
    for rule in role["rules"]:
        writes = set(rule["verbs"]) - {"get", "list", "watch"}
        if writes:
            assert writes == {"update"} and rule["apiGroups"] == ["gateway.networking.k8s.io"]
            assert all(r.endswith("/status") for r in rule["resources"]), rule
    [deployment] = by_kind(edge.workload(), "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"] == RESTRICTED
    assert container["image"] == edge.TRAEFIK.ref and edge.TRAEFIK.from_scratch


def test_the_certificate_is_the_edge_cas_for_the_domain(tmp_path: Path) -> None:
    pki = generate_edge(tmp_path, edge.DOMAIN)
    ca = x509.load_pem_x509_certificate(pki.crt("ca").read_bytes())
    leaf = x509.load_pem_x509_certificate(pki.crt("edge").read_bytes())
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [edge.DOMAIN, f"*.{edge.DOMAIN}"]
    assert names.get_values_for_type(x509.IPAddress) == []
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_build_script_pins_the_version_it_reports() -> None:
    text = edge.BUILD_SCRIPT.read_text()
    assert f'TRAEFIK_VERSION="${{TRAEFIK_VERSION:-{edge.version()}}}"' in text
    assert edge.TRAEFIK.tag == edge.version()


def test_pinned_https_sends_the_name_and_verifies_it_against_the_edge_ca(tmp_path: Path) -> None:
    """traffic.Pinned, against a TLS server on 127.0.0.1 holding the edge certificate: the
    URL's host goes out as SNI and Host, and a name the certificate does not cover fails."""
    import http.server
    import ssl
    import threading

    from devcluster.traffic import Pinned, post

    pki = generate_edge(tmp_path, edge.DOMAIN)
    seen: list[tuple[str | None, str | None]] = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.crt("edge"), pki.key("edge"))
    context.sni_callback = lambda sock, name, _ctx: seen.append(("sni", name)) and None

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            seen.append(("host", self.headers["Host"]))
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        via = Pinned("127.0.0.1", str(pki.crt("ca")))
        assert post(f"https://chat.{edge.DOMAIN}:{port}/v1/generate", {}, via=via) == \
            (200, {"ok": True})
        assert seen == [("sni", f"chat.{edge.DOMAIN}"), ("host", f"chat.{edge.DOMAIN}:{port}")]
        status, body = post(f"https://chat.example.org:{port}/v1/generate", {}, via=via)
        assert status == 0 and "CERTIFICATE_VERIFY_FAILED" in body["error"], body
    finally:
        server.shutdown()

"""Aggregated APIs served from 127.0.0.1 (what a custom-metrics adapter needs)."""

from __future__ import annotations

import http.server
import json
import secrets
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster import certs
from devcluster.client import Client
from devcluster.processes import free_port

pytestmark = pytest.mark.e2e


class _Adapter(http.server.ThreadingHTTPServer):
    """A tiny aggregated API server recording who the API server says is calling."""

    group_version = ""
    callers: list[str]

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.callers = []


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Adapter

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.server.callers.append(self.headers.get("X-Remote-User", ""))
        body = json.dumps({"kind": "APIResourceList", "apiVersion": "v1",
                           "groupVersion": self.server.group_version, "resources": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def adapter(cluster: Client, tmp_path: Path) -> Iterator[_Adapter]:
    # Trust only requests proxied by the API server: the front-proxy client
    # certificate, whose CA the cluster publishes for extension servers.
    front_ca = json.loads(cluster.kubectl(
        "-n", "kube-system", "get", "configmap", "extension-apiserver-authentication",
        "-o", "json").stdout)["data"]["requestheader-client-ca-file"]
    (tmp_path / "front-ca.crt").write_text(front_ca)
    pki = certs.generate(tmp_path / "pki")  # its serving cert covers localhost
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.crt("apiserver"), pki.key("apiserver"))
    ctx.load_verify_locations(tmp_path / "front-ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = _Adapter(free_port())
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_local_apiservice_is_reachable_through_the_aggregator(
    cluster: Client, adapter: _Adapter
) -> None:
    group = f"t{secrets.token_hex(3)}.devcluster.bem.ai"
    adapter.group_version = f"{group}/v1beta1"
    name = cluster.register_local_apiservice(group, "v1beta1", adapter.server_address[1])
    try:
        cluster.kubectl("wait", "--for=condition=Available", f"apiservice/{name}",
                        "--timeout=60s")
        deadline = time.monotonic() + 30
        while True:
            got = cluster.kubectl("get", "--raw", f"/apis/{group}/v1beta1", check=False)
            if got.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout)["groupVersion"] == f"{group}/v1beta1"
        whoami = json.loads(cluster.kubectl("auth", "whoami", "-o", "json").stdout)
        assert whoami["status"]["userInfo"]["username"] in adapter.callers
    finally:
        cluster.unregister_local_apiservice(name)
    assert cluster.kubectl("get", "apiservice", name, check=False).returncode != 0
    left = cluster.kubectl("-n", "kube-system", "get", "services", "-o", "name").stdout
    assert group.split(".")[0] not in left  # its ExternalName Service is gone too

"""A real runtime with --metrics-port and --admin-port: each route answers on its own port
only (the JSON 404 names the port that serves it), so a NetworkPolicy on the pod's ports
decides who reaches the API, the scrape and the admin API. Without them (every other server
test) everything is on --port."""
from __future__ import annotations

import pytest

from devcluster.processes import free_port

pytestmark = pytest.mark.http
ADMIN_TOKEN = "admin-token-ports-0123456789"
GEN = {"prompt": "The quick brown fox", "max_new_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def split(start_server, tmp_path_factory):
    token = tmp_path_factory.mktemp("ports") / "token"
    token.write_text(ADMIN_TOKEN + "\n")
    metrics_port, admin_port = free_port(), free_port()
    server = start_server("--metrics-port", str(metrics_port),
                          env={"BEM_ADMIN_PORT": str(admin_port), "BEM_ADMIN_TOKEN_FILE": str(token)})
    server.extra.update(metrics=metrics_port, admin=admin_port)
    return server


def _refused(reply, serving_port: int) -> None:
    assert reply.status == 404, (reply.status, reply.body)
    error = reply.json()["error"]
    assert error["type"] == "not_found" and error["field"] == "path"
    assert f"served on port {serving_port}" in error["message"]


def test_metrics_only_on_the_metrics_port(split):
    scrape = split.request("GET", "/metrics", key=None, port=split.extra["metrics"])
    assert scrape.status == 200 and b"bem_requests_total" in scrape.body
    _refused(split.request("GET", "/metrics", key=None), split.extra["metrics"])
    _refused(split.request("GET", "/metrics", key=None, port=split.extra["admin"]), split.extra["metrics"])


def test_admin_api_only_on_the_admin_port(split):
    listing = split.request("GET", "/v1/checkpoints", key=ADMIN_TOKEN, port=split.extra["admin"])
    assert listing.status == 200 and [c["name"] for c in listing.json()["data"]] == ["toy"]
    for port in (split.port, split.extra["metrics"]):
        _refused(split.request("GET", "/v1/checkpoints", key=ADMIN_TOKEN, port=port), split.extra["admin"])
        _refused(split.request("DELETE", "/v1/checkpoints/toy", key=ADMIN_TOKEN, port=port),
                 split.extra["admin"])
    # The refusal came before the admin API: the checkpoint is still there.
    again = split.request("GET", "/v1/checkpoints", key=ADMIN_TOKEN, port=split.extra["admin"])
    assert [c["name"] for c in again.json()["data"]] == ["toy"]


def test_api_and_probes_only_on_the_serving_port(split):
    assert split.request("POST", "/v1/generate", GEN).status == 200
    for path in ("/health", "/ready"):
        assert split.request("GET", path, key=None).status == 200
    for port in (split.extra["metrics"], split.extra["admin"]):
        _refused(split.request("POST", "/v1/generate", GEN, port=port), split.port)
        _refused(split.request("GET", "/ready", key=None, port=port), split.port)
        _refused(split.request("GET", "/v1/models", port=port), split.port)

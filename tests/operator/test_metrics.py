"""Operator metrics: counted by result, timed, errors by kind, isolated registries, and the
API requests of both clients (against a real local HTTP server)."""
from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import kopf
import pytest

from bem_operator.k8s import Credentials, KubeApi, Transport
from bem_operator.metrics import OperatorMetrics, counted_kopf_session


def value(metrics: OperatorMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_results_are_counted_and_timed() -> None:
    metrics = OperatorMetrics()
    with metrics.timed("spec"):
        pass
    for result, kind in (("invalid_spec", "invalid_spec"), ("retry", "api")):
        with metrics.timed("resync") as outcome:
            outcome[0] = result
        assert value(metrics, "bem_operator_errors_total", kind=kind) == 1
    with pytest.raises(RuntimeError), metrics.timed("resync"):
        raise RuntimeError("bug")
    assert value(metrics, "bem_operator_errors_total", kind="unexpected") == 1
    assert value(metrics, "bem_operator_reconciles_total", result="success", trigger="spec") == 1
    for result in ("invalid_spec", "retry", "error"):
        assert value(metrics, "bem_operator_reconciles_total", result=result, trigger="resync") == 1
    assert value(metrics, "bem_operator_reconcile_duration_seconds_count", trigger="resync") == 3


def test_registries_are_isolated() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    with first.timed("spec"):
        pass
    assert value(second, "bem_operator_reconciles_total", result="success", trigger="spec") == 0


class _AnyJson(http.server.BaseHTTPRequestHandler):
    """A local HTTP server that answers every request with an empty JSON object."""

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_PATCH = do_DELETE = _answer

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def local_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AnyJson)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_api_requests_are_counted_by_verb_and_resource(local_server: str) -> None:
    metrics = OperatorMetrics()
    samples = (("PATCH", "services"), ("GET", "bemservices"), ("PATCH", "bemservices/status"),
               ("LIST", "deployments"), ("DELETE", "poddisruptionbudgets"), ("GET", "version"),
               ("WATCH", "pods"))
    before = {s: value(metrics, "bem_operator_api_requests_total", verb=s[0], resource=s[1])
              for s in samples}
    api = KubeApi(Transport(Credentials(kopf.ConnectionInfo(server=local_server))))
    api.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "namespace": "n"}})
    api.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "n"}})
    api.get("bem.ai/v1alpha1", "BEMService", "n", "a")
    api.patch_status("n", "a", {"phase": "Ready"})
    api.request("GET", "/apis/apps/v1/namespaces/n/deployments")
    api.delete("policy/v1", "PodDisruptionBudget", "n", "a")
    assert api.reachable()

    async def kopf_watch() -> None:  # kopf's requests, through the session its login returns
        session = counted_kopf_session(kopf.ConnectionInfo(server=local_server)).aiohttp_session
        async with session, session.get(f"{local_server}/api/v1/pods?watch=true") as resp:
            assert resp.status == 200
    asyncio.run(kopf_watch())
    counted = {s: value(metrics, "bem_operator_api_requests_total", verb=s[0], resource=s[1])
               - before[s] for s in samples}
    assert counted == {("PATCH", "services"): 2, ("GET", "bemservices"): 1,
                       ("PATCH", "bemservices/status"): 1, ("LIST", "deployments"): 1,
                       ("DELETE", "poddisruptionbudgets"): 1, ("GET", "version"): 1,
                       ("WATCH", "pods"): 1}

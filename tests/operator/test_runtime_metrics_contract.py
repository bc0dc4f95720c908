"""The KEDA trigger's query from both sides: the series and label it selects are what the runtime
exports, and its endpoints are exactly the runtime's generation routes (so the autoscaler counts
generation load, never probes, scrapes or the light routing and model-list calls)."""

from __future__ import annotations

from aiohttp import web
from builders_factory import build_service_monitor, make_bems

from bem_operator.builders import BuildOptions
from bem_operator.builders.keda import GENERATION_ENDPOINTS
from bem_runtime import handlers
from bem_runtime.metrics import Metrics
from bem_runtime.routes import setup_routes


def test_generation_endpoints_are_the_runtime_generation_routes() -> None:
    app = web.Application()
    setup_routes(app)
    generating = {route.resource.canonical for route in app.router.routes()
                  if route.handler in (handlers.generate, handlers.completions,
                                          handlers.chat_completions)}
    assert set(GENERATION_ENDPOINTS) == generating
    assert len(GENERATION_ENDPOINTS) == len(generating)


def test_request_counter_is_labelled_by_route() -> None:
    """bem_requests_total{endpoint} holds the route; scraped through our ServiceMonitor (a port
    named endpoint, honorLabels off) Prometheus stores it as exported_endpoint."""
    metrics = Metrics()
    metrics.observe_request("/v1/generate", 200, 0.1)
    text = metrics.render().decode()
    assert 'bem_requests_total{endpoint="/v1/generate",status="200"} 1.0' in text
    endpoint = build_service_monitor(make_bems(), BuildOptions())["spec"]["endpoints"][0]
    assert endpoint["port"] and not endpoint.get("honorLabels")

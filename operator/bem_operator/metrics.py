"""The operator's own Prometheus metrics (kopf has none built in).

One registry per instance, so tests get isolated counters.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import aiohttp
import kopf
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from bem_operator.k8s import count_request, request_counts
from bem_operator.reconcile import InvalidSpec, RetryableError

RESULTS = ("success", "invalid_spec", "retry", "error")
TRIGGERS = ("create", "update", "resume", "timer", "child")
API_ERROR_KINDS = ("connection", "server", "throttled", "conflict", "invalid", "forbidden")


class ApiRequests(Collector):
    """bem_operator_api_requests_total: what k8s.count_request counted in this process."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "bem_operator_api_requests", "Requests the operator's API clients sent, by verb "
            "(GET, LIST, WATCH, PATCH, ...) and resource (plural[/subresource])",
            labels=["verb", "resource"])
        for (verb, resource), count in sorted(request_counts().items()):
            family.add_metric([verb, resource], count)
        yield family


def counted_kopf_session(info: kopf.ConnectionInfo) -> kopf.AiohttpSession:
    """kopf's HTTP session as kopf builds it, plus a trace that counts every request (kopf
    has no request metrics). Return it from an async @kopf.on.login handler, which runs on
    the loop the session needs."""
    async def count(_: aiohttp.ClientSession, __: SimpleNamespace,
                    params: aiohttp.TraceRequestStartParams) -> None:
        count_request(params.method, str(params.url))
    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(count)
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(), proxy=info.proxy_url, trust_env=info.trust_env,
        trace_configs=[trace])
    return kopf.AiohttpSession(aiohttp_session=session, server=info.server,
                               default_namespace=info.default_namespace,
                               priority=info.priority, expiration=info.expiration)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(ApiRequests())
        self.reconciles = Counter(
            "bem_operator_reconciles_total", "Reconciles of BEMServices, by result and trigger",
            ["result", "trigger"], registry=self.registry)
        self.duration = Histogram(
            "bem_operator_reconcile_duration_seconds", "Time one reconcile of a BEMService took",
            ["trigger"], registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
        self.errors = Counter(
            "bem_operator_errors_total", "Failed reconciles and other operator errors, by kind",
            ["kind"], registry=self.registry)
        self.api_errors = Counter(
            "bem_operator_api_errors_total",
            "Failed requests to the API server, by kind (connection, server, throttled, "
            "conflict, invalid, forbidden, ...)", ["kind"], registry=self.registry)
        for kind in API_ERROR_KINDS:
            self.api_errors.labels(kind=kind)
        for result in RESULTS:  # export zeros so rate() and alerts work from the start
            for trigger in TRIGGERS:
                self.reconciles.labels(result=result, trigger=trigger)
        for kind in ("invalid_spec", "api", "unexpected", "child_event"):
            self.errors.labels(kind=kind)

    @contextmanager
    def timed(self, trigger: str) -> Iterator[None]:
        """Counts and times one reconcile; the result comes from how the block ends."""
        started = time.perf_counter()
        result = "success"
        try:
            yield
        except InvalidSpec:
            result = "invalid_spec"
            self.errors.labels(kind="invalid_spec").inc()
            raise
        except RetryableError:
            result = "retry"
            self.errors.labels(kind="api").inc()
            raise
        except Exception:
            result = "error"
            self.errors.labels(kind="unexpected").inc()
            raise
        finally:
            self.reconciles.labels(result=result, trigger=trigger).inc()
            self.duration.labels(trigger=trigger).observe(time.perf_counter() - started)

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, addr=address, registry=self.registry)

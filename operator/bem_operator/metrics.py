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
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from bem_operator.k8s import count_request, request_counts

RESULTS = ("success", "invalid_spec", "retry", "error")
# Why a BEMService was queued: its own spec or metadata changed, a child or pod changed,
# the periodic check, or a retry after a failure (the first reason of a merged burst).
TRIGGERS = ("spec", "child", "resync", "retry")
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
        self.applies = Counter(
            "bem_operator_child_applies_total",
            "Server-side applies of children: a settled BEMService costs none", ["kind"],
            registry=self.registry)
        self.watch_events = Counter(
            "bem_operator_watch_events_total",
            "Watch events the operator took, by kind and outcome: queued (a BEMService needs a "
            "reconcile) or dropped (its own write coming back, a status nothing reads, an old "
            "event)", ["kind", "outcome"], registry=self.registry)
        self.queue_depth = Gauge(
            "bem_operator_workqueue_depth", "BEMServices waiting for a reconcile",
            registry=self.registry)
        for kind in API_ERROR_KINDS:
            self.api_errors.labels(kind=kind)
        for result in RESULTS:  # export zeros so rate() and alerts work from the start
            for trigger in TRIGGERS:
                self.reconciles.labels(result=result, trigger=trigger)
        for kind in ("invalid_spec", "api", "unexpected"):
            self.errors.labels(kind=kind)

    @contextmanager
    def timed(self, trigger: str) -> Iterator[list[str]]:
        """Counts and times one reconcile; the block may set its result (yielded as a
        one-item list, "success" unless set), and an exception counts as "error"."""
        started = time.perf_counter()
        outcome = ["success"]
        try:
            yield outcome
        except Exception:
            outcome[0] = "error"
            self.errors.labels(kind="unexpected").inc()
            raise
        finally:
            result = outcome[0]
            if result in ("invalid_spec", "retry"):
                self.errors.labels(kind="invalid_spec" if result == "invalid_spec"
                                   else "api").inc()
            self.reconciles.labels(result=result, trigger=trigger).inc()
            self.duration.labels(trigger=trigger).observe(time.perf_counter() - started)

    def serve(self, port: int, address: str) -> None:
        start_http_server(port, addr=address, registry=self.registry)


class LeaderMetrics:
    """Leader election (bem_operator.leader): whether this replica leads, and how often that
    changed. In the operator's registry, or a fresh one (tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.leader = Gauge("bem_operator_leader",
                            "1 while this replica holds the leader Lease and may write, else 0",
                            registry=self.registry)
        self.transitions = Counter(
            "bem_operator_leader_transitions_total",
            "Times this replica gained or lost leadership, by change", ["change"],
            registry=self.registry)
        for change in ("gained", "lost"):
            self.transitions.labels(change=change)

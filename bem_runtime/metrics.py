"""All Prometheus metrics of the runtime, in one place, on a registry owned by each app.

Names beginning with the seed's (bem_requests_total, ...) are kept because dashboards and the
HPA's adapter rules use them. Labels stay few and bounded (endpoint, status, type, expert, and
checkpoint: at most --max-checkpoints names are resident at once). bem_requests_total keeps its
two labels, which the autoscaler's query and its contract test pin; the checkpoint of each
request is counted beside it in bem_checkpoint_requests_total.
"""
from __future__ import annotations

import collections
import resource
import sys
import time

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram,
                               disable_created_metrics, generate_latest)

LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
RPS_WINDOW_S = 60.0
disable_created_metrics()  # the *_created series double the scrape size for no use here


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("bem_requests_total", "HTTP requests handled",
                                ["endpoint", "status"], registry=r)
        self.checkpoint_requests = Counter(
            "bem_checkpoint_requests_total", "HTTP requests that selected a checkpoint (the "
            "checkpoint label is empty for the bare base model)", ["checkpoint", "endpoint", "status"],
            registry=r)
        self.request_duration = Histogram("bem_request_duration_seconds",
                                          "HTTP request latency", ["endpoint"],
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.inference_duration = Histogram("bem_inference_duration_seconds",
                                            "Engine time of one request, admission to result",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.active = Gauge("bem_active_connections", "Requests in flight", registry=r)
        self.memory = Gauge("bem_memory_usage_bytes", "Memory in use", ["kind"], registry=r)
        self.gpu_util = Gauge("bem_gpu_utilization_percent", "GPU utilisation", registry=r)
        self.safety = Counter("bem_safety_violations_total",
                              "Governance clamps and run-time safety events", ["type"], registry=r)
        self.routing = Counter("bem_routing_decisions_total",
                               "Chunks routed to each expert of each checkpoint",
                               ["expert", "checkpoint"], registry=r)
        self.tokens = Counter("bem_tokens_total", "Tokens processed", ["kind", "checkpoint"],
                              registry=r)
        self.checkpoints_resident = Gauge("bem_checkpoints_resident",
                                          "BEM checkpoints resident over the base model", registry=r)
        self.checkpoint_load_duration = Histogram(
            "bem_checkpoint_load_duration_seconds", "Time to read, validate and govern a "
            "checkpoint", buckets=LOAD_BUCKETS, registry=r)
        self.checkpoint_load_failures = Counter(
            "bem_checkpoint_load_failures_total", "Checkpoint loads refused, by reason",
            ["reason"], registry=r)
        self.batch_size = Histogram("bem_batch_size", "Rows in flight per decode step",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("bem_queue_depth", "Requests waiting for a batch", registry=r)
        self.queue_rejections = Counter("bem_queue_rejections_total",
                                        "Requests refused because the queue was full", registry=r)
        self.cancelled = Counter("bem_cancelled_requests_total",
                                 "Requests dropped before they finished (disconnect, timeout, "
                                 "drain)", ["reason"], registry=r)
        self.tokens_not_generated = Counter("bem_cancelled_tokens_total",
                                            "Tokens cancelled requests no longer generated "
                                            "(max_new_tokens minus what was generated)", registry=r)
        self.cache = Counter("bem_cache_requests_total", "Response cache lookups and writes",
                             ["result"], registry=r)
        self.rps = Gauge("bem_requests_per_second",
                         f"Requests per second over the last {RPS_WINDOW_S:.0f} s", registry=r)
        self.ready = Gauge("bem_ready", "1 when GET /ready is 200: the model and its start list "
                           "are loaded", registry=r)
        self._recent: collections.deque[float] = collections.deque()

    def observe_request(self, endpoint: str, status: int, seconds: float,
                        checkpoint: str | None = None) -> None:
        """checkpoint: the name a generating request selected ("" for the bare base model),
        None for requests that select none."""
        self.requests.labels(endpoint, str(status)).inc()
        if checkpoint is not None:
            self.checkpoint_requests.labels(checkpoint, endpoint, str(status)).inc()
        self.request_duration.labels(endpoint).observe(seconds)
        self._recent.append(time.monotonic())

    def observe_result(self, result) -> None:
        """Record tokens, routing and safety events of one GenerationResult."""
        name = result.checkpoint or ""
        self.tokens.labels("prompt", name).inc(result.prompt_tokens)
        self.tokens.labels("completion", name).inc(result.completion_tokens)
        for decision in result.routing:
            for expert in decision.experts:
                self.routing.labels(str(expert), name).inc()
        for kind, count in result.safety_events.items():
            if count:
                self.safety.labels(kind).inc(count)

    def observe_load_report(self, report: dict[str, int]) -> None:
        for kind, count in report.items():
            # Touch the series even at zero so dashboards see it exists.
            self.safety.labels(kind).inc(count)

    def render(self) -> bytes:
        self._refresh_gauges()
        return generate_latest(self.registry)

    def _refresh_gauges(self) -> None:
        now = time.monotonic()
        while self._recent and self._recent[0] < now - RPS_WINDOW_S:
            self._recent.popleft()
        self.rps.set(len(self._recent) / RPS_WINDOW_S)
        self.memory.labels("rss").set(_rss_bytes())
        torch = sys.modules.get("torch")  # only if the engine imported it; never import here
        if torch is not None and torch.cuda.is_available():
            self.memory.labels("cuda").set(torch.cuda.memory_allocated())
            try:
                self.gpu_util.set(torch.cuda.utilization())
            except Exception:  # needs NVML; the gauge stays at its last value without it
                pass


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        # ru_maxrss is a peak in KiB on Linux; better than nothing off Linux.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

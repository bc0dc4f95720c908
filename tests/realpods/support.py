"""Helpers of the real-pod tier: bounded request loops through Services, BEMService waits."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from devcluster.health import wait_until
from devcluster.realnode import wait_served_here

GENERATE = {"prompt": "The operator reconciled", "max_new_tokens": 4, "temperature": 0,
            "seed": 7}
BAKED_IMAGE = "bem-runtime-with-model:0.1.0"
SMALL = {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def figure(text: str) -> None:
    print(f"[figure] {text}", file=sys.stderr, flush=True)


def apply(cluster: Any, namespace: str, obj: dict[str, Any] | str) -> None:
    doc = obj if isinstance(obj, str) else json.dumps(obj)
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=doc)


def runtime_pods(cluster: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    pods = get_json(cluster, "pods", "-n", namespace, "-l", f"bem.ai/service={name}")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def get_json(cluster: Any, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def service_url(cluster: Any, namespace: str, name: str) -> str:
    """http://<ClusterIP>:<port>, once kube-proxy serves the ClusterIP on this machine."""
    svc = get_json(cluster, "service", name, "-n", namespace)
    ip, port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["port"]
    wait_served_here(ip)
    return f"http://{ip}:{port}"


def post(url: str, body: dict[str, Any], timeout: float = 30.0,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """POST JSON on a fresh connection; (status, JSON body); status 0 on a network error."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Connection": "close", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"raw": raw[:200].decode(errors="replace")}
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": str(exc)}


def bems_ready(cluster: Any, namespace: str, name: str, timeout: float = 240) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def ready() -> bool:
        seen.update(get_json(cluster, "bemservice", name, "-n", namespace))
        conds = {c["type"]: c for c in seen.get("status", {}).get("conditions", [])}
        return conds.get("Ready", {}).get("status") == "True" and \
            seen["status"].get("observedGeneration") == seen["metadata"]["generation"]
    try:
        wait_until(f"BEMService {namespace}/{name} Ready", ready, timeout=timeout, interval=1)
    except Exception as exc:
        raise AssertionError(f"{exc}; last status: {json.dumps(seen.get('status'))}") from None
    return seen


def rollout_done(cluster: Any, namespace: str, name: str, timeout: float = 300) -> None:
    cluster.kubectl("rollout", "status", f"deployment/{name}", "-n", namespace,
                    f"--timeout={int(timeout)}s", timeout=timeout + 10)


@dataclass
class Load:
    """A steady request loop through a URL, bounded in count and in time.

    One request at a time, each on a fresh connection (so each picks an endpoint
    anew, as a new client would), `pause` seconds apart."""

    url: str
    max_requests: int = 2000
    max_seconds: float = 180.0
    pause: float = 0.05
    results: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _run(self) -> None:
        began = time.monotonic()
        while not self._stop.is_set() and len(self.results) < self.max_requests \
                and time.monotonic() - began < self.max_seconds:
            t = time.monotonic()
            status, body = post(f"{self.url}/v1/generate", GENERATE, timeout=30)
            detail = "" if status == 200 else json.dumps(body)[:300]
            self.results.append((t, status, detail))
            time.sleep(self.pause)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        wait_until(f"{count} requests sent", lambda: len(self.results) >= count,
                   timeout=timeout)

    @property
    def failures(self) -> list[tuple[float, int, str]]:
        return [r for r in self.results if r[1] != 200]

    def outage_seconds(self) -> float:
        """From the first failed request to the first success after the last failure."""
        fails = self.failures
        if not fails:
            return 0.0
        first, last = fails[0][0], fails[-1][0]
        after = [t for t, s, _ in self.results if s == 200 and t > last]
        return (after[0] if after else last) - first

    def summary(self) -> str:
        n = len(self.results)
        span = (self.results[-1][0] - self.results[0][0]) if n > 1 else 0.0
        return (f"{n} requests in {span:.1f}s, {len(self.failures)} failed, "
                f"outage {self.outage_seconds():.1f}s")

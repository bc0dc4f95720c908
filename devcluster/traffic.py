"""Bounded request loops through a BEMService's Service: for the real-pod tests, the demo's
scale step and the autoscaling benchmark.

Only to addresses this machine serves (a ClusterIP with kube-proxy's rule, a pod IP behind the
node's bridge: devcluster.realnode.wait_served_here checks before the first request), and
always bounded in count and in time.

    python -m devcluster.traffic http://<ClusterIP>:<port> [--loops 3] [--seconds 60]
        [--namespace NS --deployment NAME [--until-ready N]]   # print its replicas as they
                                                               # change (stop at N ready)
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from devcluster.health import wait_until
from devcluster.realnode import wait_served_here

GENERATE = {"prompt": "The operator reconciled", "max_new_tokens": 4, "temperature": 0,
            "seed": 7}


@dataclass(frozen=True)
class Pinned:
    """HTTPS to host names this machine does not resolve (the local Gateway's), sent to one
    address this machine serves (the Gateway's ClusterIP): the URL's host is the SNI and the
    Host header, and the certificate is verified against `ca_file` for that name."""

    address: str
    ca_file: str

    def __post_init__(self) -> None:
        wait_served_here(self.address)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def connection(self, host: str, port: int = 443, timeout: float = 30.0
                   ) -> http.client.HTTPSConnection:
        """An HTTPS connection to `host` that dials the pinned address."""
        pinned, context = self.address, self.context()

        class Connection(http.client.HTTPSConnection):
            def connect(self) -> None:
                sock = socket.create_connection((pinned, self.port), self.timeout)
                self.sock = context.wrap_socket(sock, server_hostname=self.host)
        return Connection(host, port, timeout=timeout, context=context)

    def opener(self) -> urllib.request.OpenerDirector:
        pinned = self

        class Handler(urllib.request.HTTPSHandler):
            def https_open(self, req: urllib.request.Request) -> Any:
                return self.do_open(lambda host, timeout=30.0, **_: pinned.connection(
                    *_split(host), timeout=timeout), req)
        return urllib.request.build_opener(Handler())


def _split(host: str) -> tuple[str, int]:
    name, _, port = host.partition(":")
    return name, int(port or 443)


def post(url: str, body: dict[str, Any], timeout: float = 30.0,
         headers: dict[str, str] | None = None, via: Pinned | None = None
         ) -> tuple[int, dict[str, Any]]:
    """POST JSON on a fresh connection (through `via` for a Gateway's host name); (status,
    JSON body); status 0 on a network error."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "Connection": "close", **(headers or {})})
    opener = via.opener() if via is not None else urllib.request.build_opener()
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"{}")
        except ValueError:
            return exc.code, {"raw": raw[:200].decode(errors="replace")}
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"error": str(exc)}


@dataclass
class Load:
    """A steady request loop through a URL, bounded in count and in time.

    One request at a time, each on a fresh connection (so each picks an endpoint
    anew, as a new client would), `pause` seconds apart."""

    url: str
    max_requests: int = 2000
    max_seconds: float = 180.0
    pause: float = 0.05
    model: str | None = None  # the checkpoint each request names (the runtime's default if None)
    via: Pinned | None = None  # through the local Gateway: HTTPS to a name of its
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
            request = GENERATE if self.model is None else {**GENERATE, "model": self.model}
            status, body = post(f"{self.url}/v1/generate", request, timeout=30, via=self.via)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devcluster.traffic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="http://<ClusterIP>:<port> of a BEMService's Service")
    p.add_argument("--loops", type=int, default=3, help="concurrent request loops (default 3)")
    p.add_argument("--seconds", type=float, default=60.0, help="how long (default 60, max 600)")
    p.add_argument("--pause", type=float, default=0.25,
                   help="seconds between one loop's requests (default 0.25: a few per second, "
                        "under the runtime's per-client rate limit)")
    p.add_argument("--namespace", help="with --deployment: watch its replica count")
    p.add_argument("--deployment", help="print the Deployment's replicas as they change")
    p.add_argument("--until-ready", type=int, default=0,
                   help="with --deployment: stop once it has this many ready replicas")
    args = p.parse_args(argv)
    host = urllib.parse.urlsplit(args.url).hostname or ""
    print(f"{host} is {wait_served_here(host)}", file=sys.stderr)
    seconds = min(args.seconds, 600.0)
    loads = [Load(args.url, max_requests=100_000, max_seconds=seconds, pause=max(args.pause, 0.01))
             for _ in range(max(1, min(args.loops, 16)))]
    began, last = time.monotonic(), None
    try:
        for load in loads:
            load.__enter__()
        while time.monotonic() - began < seconds:
            if args.deployment:
                out = subprocess.run(["kubectl", "get", "deployment", args.deployment, "-n",
                                      args.namespace or "default", "-o",
                                      "jsonpath={.spec.replicas} {.status.readyReplicas}"],
                                     capture_output=True, text=True)
                now = out.stdout.strip()
                want, _, ready = now.partition(" ")
                if out.returncode == 0 and now != last:
                    print(f"[{time.monotonic() - began:5.1f}s] {args.deployment}: {want} "
                          f"replicas wanted, {ready or 0} ready", flush=True)
                    last = now
                if args.until_ready and int(ready or 0) >= args.until_ready:
                    break
            time.sleep(1)
    finally:
        for load in loads:
            load.stop()
    sent = sum(len(load.results) for load in loads)
    failures = [f for load in loads for f in load.failures]
    statuses = sorted({str(status) for _, status, _ in failures})
    print(f"{sent} requests in {time.monotonic() - began:.0f}s, {len(failures)} failed"
          + (f" (status {', '.join(statuses)}: {failures[0][2]})" if failures else ""), flush=True)
    failed = len(failures)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the operator vs a plain client applying the same objects (not a test).

    python bench/bench_operator.py [--count 200] [--replicas 2] [--idle-seconds 90]
                                   [--timeout 900] [--kubeconfig PATH] [--direct-extras]

On a control plane with kwok nodes and no real node (started here and stopped at the end, or
an existing one with --kubeconfig or BEM_DEVCLUSTER_KUBECONFIG), in one run, one after the other:
  direct:   create N BEMServices, render their children with the same pure builders and
            server-side apply them from this process, and create each one's admin token
            Secret (with --direct-extras, also the writes the operator makes beside its
            objects: a Pending and a Ready status, the Ready Event; the ratio is then the
            operator's own cost);
  operator: start `python -m bem_operator`, create N BEMServices, let it work; then leave it
            idle with the N settled objects for --idle-seconds.
Watches see every object: "created" is when all its children exist, "Ready" when its
Deployment has rolled out (direct) or its status says Ready for its generation (operator).
Prints, side by side: time to all created and to all Ready and their ratio operator/direct
(target <= 1.2); the operator's API requests per BEMService created and per resync period
(its bem_operator_api_requests_total, scraped before and after) and the watch events it took
per BEMService, by kind, with those that queued a reconcile; the API server's requests per
BEMService in both phases (every client, kopf's requests included); the operator's RSS (target
<= 150 MB) and idle CPU (target < 5% of one core) with its requests per 5 s over the idle
window, where a periodic relist shows as a spike every resync period; and how long the
controller-manager and scheduler waited on their client-side rate limits.
Everything it starts (operator, watches, namespaces, the cluster) is stopped or deleted at the
end; each phase is bounded by --timeout.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from devcluster.health import self_signed_tls
from devcluster.processes import free_port

REPO = Path(__file__).resolve().parents[1]
CRDS = (REPO / "crds" / "bemservice.yaml", REPO / "crds" / "bemcheckpoint.yaml")
BEMSERVICES = "/apis/bem.ai/v1alpha1/namespaces/{ns}/bemservices"
CHILD_PATHS = ("/apis/apps/v1/namespaces/{ns}/deployments", "/api/v1/namespaces/{ns}/services",
               "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets")
SUBMITTERS = 8  # concurrent client threads, the same for both runs
SAMPLE_SECONDS = 5.0  # the idle window's resolution


def bemservice(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    return {"apiVersion": "bem.ai/v1alpha1", "kind": "BEMService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"source": "Image"}, "replicas": replicas,
                     "monitoring": {"serviceMonitor": False}}}


def deployment_ready(dep: dict[str, Any]) -> bool:
    status, want = dep.get("status") or {}, dep["spec"].get("replicas", 1)
    return (status.get("observedGeneration", 0) >= dep["metadata"]["generation"]
            and status.get("updatedReplicas") == want and status.get("replicas") == want
            and status.get("availableReplicas") == want and status.get("readyReplicas") == want)


def bems_ready(bems: dict[str, Any]) -> bool:
    status = bems.get("status") or {}
    return status.get("phase") == "Ready" and \
        status.get("observedGeneration") == bems["metadata"]["generation"]


def raw_get(api_client: Any, path: str, timeout: float | None = 60.0) -> Any:
    """GET through the kubernetes client's connection handling; the unread response."""
    method, url, headers, _, _ = api_client.param_serialize(
        method="GET", resource_path=path, header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"])
    return api_client.call_api(method, url, header_params=headers, _request_timeout=timeout)


class Watcher(threading.Thread):
    """Lists then watches one collection; notes when each name was first seen and first ready."""

    def __init__(self, api_client: Any, path: str,
                 ready: Callable[[dict[str, Any]], bool] | None = None) -> None:
        super().__init__(daemon=True, name=f"watch {path}")
        self.api_client, self.path, self.is_ready = api_client, path, ready
        self.seen: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.stopping = threading.Event()

    def note(self, obj: dict[str, Any]) -> None:
        name, now = obj["metadata"]["name"], time.monotonic()
        self.seen.setdefault(name, now)
        if self.is_ready and name not in self.ready and self.is_ready(obj):
            self.ready[name] = now

    def run(self) -> None:
        version = None
        while not self.stopping.is_set():
            try:
                if version is None:
                    listed = json.loads(raw_get(self.api_client, self.path).read())
                    for obj in listed["items"]:
                        self.note(obj)
                    version = listed["metadata"]["resourceVersion"]
                version = self._stream(version)
            except Exception:  # noqa: BLE001 - a dropped watch: list again
                version = None
                time.sleep(0.5)

    def _stream(self, version: str) -> str | None:
        resp = raw_get(self.api_client, f"{self.path}?watch=true&allowWatchBookmarks=true"
                       f"&timeoutSeconds=15&resourceVersion={version}", timeout=None)
        for line in _lines(resp.response):
            event = json.loads(line)
            if event["type"] == "ERROR":  # 410 Gone: the version is too old
                return None
            version = event["object"]["metadata"]["resourceVersion"]
            if event["type"] in ("ADDED", "MODIFIED"):
                self.note(event["object"])
            if self.stopping.is_set():
                break
        resp.response.release_conn()
        return version


def _lines(response: Any) -> Iterator[bytes]:
    pending = b""
    for chunk in response.stream(65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())


@dataclass
class Phase:
    """One phase's timings: seconds from the first create call, per object and in all."""
    label: str
    count: int
    created: dict[str, float] = field(default_factory=dict)
    ready: dict[str, float] = field(default_factory=dict)
    requests: float = 0.0  # the API server's, every client
    machine_busy: float = 0.0  # the machine's CPUs busy over the phase, in cores

    def all_created(self) -> float:
        return max(self.created.values())

    def all_ready(self) -> float:
        return max(self.ready.values())


def run_phase(api_client: Any, watch_client: Any, phase: Phase, namespace: str, names: list[str],
              submit: Callable[[str], None], ready_path: str,
              ready: Callable[[dict[str, Any]], bool], timeout: float) -> None:
    watchers = [Watcher(watch_client, p.format(ns=namespace)) for p in CHILD_PATHS]
    ready_watch = next((w for w in watchers if w.path == ready_path.format(ns=namespace)), None)
    if ready_watch is None:
        ready_watch = Watcher(watch_client, ready_path.format(ns=namespace))
        watchers.append(ready_watch)
    ready_watch.is_ready = ready
    for w in watchers:
        w.start()
    before = apiserver_requests(api_client)
    busy_before = machine_cpu()
    t0 = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(SUBMITTERS) as pool:
            list(pool.map(submit, names))
        deadline = t0 + timeout
        while True:
            seen = [w.seen for w in watchers[:len(CHILD_PATHS)]]
            done = [n for n in names if n in ready_watch.ready and all(n in s for s in seen)]
            if len(done) == len(names):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{phase.label}: {len(done)} of {len(names)} Ready after "
                                 f"{timeout:.0f}s")
            time.sleep(0.5)
    finally:
        for w in watchers:
            w.stopping.set()
    for n in names:
        phase.created[n] = max(s[n] for s in seen) - t0
        phase.ready[n] = max(ready_watch.ready[n] - t0, phase.created[n])
    phase.requests = apiserver_requests(api_client) - before
    busy_after = machine_cpu()
    phase.machine_busy = (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])


def install_crds(kubectl: Path | str, kubeconfig: Path) -> Callable[..., Any]:
    """Applies both CRDs and waits until they are served; returns the kubectl runner."""
    def run(*args: str) -> Any:
        return subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", *args],
                              check=True, capture_output=True, text=True)
    for crd in CRDS:
        run("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    run("wait", "--for=condition=Established", "crd/bemservices.bem.ai",
        "crd/bemcheckpoints.bem.ai", "--timeout=60s")
    return run


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds a process has used (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """Seconds of CPU busy on the whole machine (every process: API server, etcd, kwok, the
    controllers, the operator, this bench) and seconds of wall time, from /proc."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / ticks, time.monotonic()


def apiserver_requests(api_client: Any) -> float:
    text = raw_get(api_client, "/metrics").read().decode()
    return sum(s.value for s in _samples(text, "apiserver_request_total"))


def _samples(text: str, name: str) -> Iterator[Any]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                yield sample


class Operator:
    """`python -m bem_operator` in a subprocess, with its /metrics and /proc numbers."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.log = Path(tempfile.mkdtemp(prefix="bench-operator-")) / "operator.log"
        self.metrics_port, self.health_port = free_port(), free_port()
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "BEM_OPERATOR_NAMESPACES": namespace,
               "BEM_OPERATOR_BIND_ADDRESS": "127.0.0.1",
               "BEM_OPERATOR_METRICS_PORT": str(self.metrics_port),
               "BEM_OPERATOR_HEALTH_PORT": str(self.health_port)}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bem_operator"], env=env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=REPO)

    def wait_live(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"The operator exited:\n{self.log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"The operator did not become live within {timeout:.0f}s")

    def counters(self, name: str, *labels: str) -> Counter[tuple[str, ...]]:
        """One counter of its /metrics, by the values of `labels`."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as resp:
            text = resp.read().decode()
        counts: Counter[tuple[str, ...]] = Counter()
        for sample in _samples(text, name):  # summed over the labels not asked for
            counts[tuple(sample.labels[label] for label in labels)] += sample.value
        return counts

    def requests(self) -> Counter[tuple[str, ...]]:
        """Its bem_operator_api_requests_total by (verb, resource)."""
        return self.counters("bem_operator_api_requests_total", "verb", "resource")

    def reconciles(self) -> Counter[tuple[str, ...]]:
        """Its bem_operator_reconciles_total by trigger (spec, child, resync, retry)."""
        return self.counters("bem_operator_reconciles_total", "trigger")

    def watch_events(self) -> Counter[tuple[str, ...]]:
        """Its bem_operator_watch_events_total by (kind, outcome)."""
        return self.counters("bem_operator_watch_events_total", "kind", "outcome")

    def proc_status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
        raise SystemExit(f"No {key} in /proc: RSS needs Linux")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid)

    def stop(self, succeeded: bool) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if succeeded:  # the log is kept when the run failed
            shutil.rmtree(self.log.parent, ignore_errors=True)
        else:
            print(f"operator log: {self.log}", file=sys.stderr)


@dataclass
class Idle:
    seconds: float
    cpu_seconds: float
    per_sample: list[float]
    by_verb: Counter[str]


def idle_window(operator: Operator, seconds: float) -> Idle:
    """Samples the settled operator's requests every SAMPLE_SECONDS for `seconds`."""
    first = last = operator.requests()
    cpu0, t0 = operator.cpu_seconds(), time.monotonic()
    series: list[float] = []
    while time.monotonic() - t0 < seconds:
        time.sleep(SAMPLE_SECONDS)
        now = operator.requests()
        series.append(sum((now - last).values()))
        last = now
    by_verb: Counter[str] = Counter()
    for (verb, _), n in (last - first).items():
        by_verb[verb] += n
    return Idle(time.monotonic() - t0, operator.cpu_seconds() - cpu0, series, by_verb)


class Throttle:
    """Seconds the controller-manager and scheduler waited on their client-side rate limit
    (client-go's rest_client_rate_limiter_duration_seconds), read from their /metrics."""

    def __init__(self, state_dir: Path | None) -> None:
        meta = state_dir / "cluster.json" if state_dir else None
        ports = json.loads(meta.read_text())["ports"] if meta and meta.is_file() else {}
        self.ports = {c: ports[key] for c, key in (("controller-manager", "controller_manager"),
                                                    ("scheduler", "scheduler")) if key in ports}

    def waited(self) -> dict[str, float]:
        waited = {}
        for component, port in self.ports.items():
            try:
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics",
                                            context=self_signed_tls(), timeout=10) as resp:
                    text = resp.read().decode()
            except OSError:
                continue
            waited[component] = sum(s.value for s in _samples(
                text, "rest_client_rate_limiter_duration_seconds_sum"))
        return waited


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def report(direct: Phase, operated: Phase, created_requests: Counter[tuple[str, ...]],
           totals: Counter[tuple[str, ...]], events: Counter[tuple[str, ...]],
           reconciles: Counter[tuple[str, ...]], busy_cpu: float,
           idle: Idle, rss: tuple[float, float], throttled: dict[str, tuple[float, float]],
           resync: float, watched_kinds: int, watch_timeout: int) -> None:
    n = direct.count
    print(f"\n{'':26s}{'direct':>10s}{'operator':>10s}{'ratio':>8s}  target")
    for what, get in (("all created (s)", Phase.all_created), ("all Ready (s)", Phase.all_ready)):
        d, o = get(direct), get(operated)
        print(f"{what:26s}{d:10.1f}{o:10.1f}{o / d:8.2f}  <= 1.2")
    for what, q in (("per object Ready p50 (s)", 0.5), ("per object Ready p95 (s)", 0.95)):
        d, o = pct(list(direct.ready.values()), q), pct(list(operated.ready.values()), q)
        print(f"{what:26s}{d:10.1f}{o:10.1f}{o / d:8.2f}")
    print(f"{'API server requests/obj':26s}{direct.requests / n:10.1f}"
          f"{operated.requests / n:10.1f}{operated.requests / direct.requests:8.2f}"
          "  (every client)")
    print(f"{'machine CPU busy (cores)':26s}{direct.machine_busy:10.2f}"
          f"{operated.machine_busy:10.2f}  of {os.cpu_count()}")
    for component, (d, o) in throttled.items():
        print(f"{component + ' throttled (s)':26s}{d:10.1f}{o:10.1f}")
    total = sum(created_requests.values())
    print(f"\noperator API requests per BEMService created: {total / n:.2f}  "
          + ", ".join(f"{v} {r}: {c / n:.2f}" for (v, r), c in created_requests.most_common(8)))
    by_kind: Counter[str] = Counter()
    for (kind, _), c in events.items():
        by_kind[kind] += c
    queued = sum(c for (_, outcome), c in events.items() if outcome == "queued")
    print(f"operator watch events per BEMService created: {sum(by_kind.values()) / n:.1f} "
          f"({queued / n:.1f} queued a reconcile): "
          + ", ".join(f"{k} {c / n:.1f} ({events[k, 'queued'] / n:.1f})"
                      for k, c in by_kind.most_common()))
    print(f"operator reconciles per BEMService created: {sum(reconciles.values()) / n:.1f} ("
          + ", ".join(f"trigger {t} {c / n:.1f}" for (t,), c in reconciles.most_common()) + ")")
    watches = {verb: sum(c for (v, _), c in totals.items() if v == verb)
               for verb in ("LIST", "WATCH")}
    print(f"  the operator's lists and watches over the whole run: LIST {watches['LIST']}, "
          f"WATCH {watches['WATCH']}: {watched_kinds} kinds, each WATCH re-opened every "
          f"{watch_timeout}s, none per object")
    print(f"operator CPU while the {n} BEMServices were made: {busy_cpu:.1f} s "
          f"({1000 * busy_cpu / n:.1f} ms per BEMService)")
    periods = idle.seconds / resync
    print(f"operator idle over {idle.seconds:.0f}s with {n} settled BEMServices: "
          f"CPU {100 * idle.cpu_seconds / idle.seconds:.1f}% of one core (target < 5%), "
          f"{sum(idle.by_verb.values()) / periods:.0f} requests per {resync:.0f}s resync "
          f"({sum(idle.by_verb.values()) / periods / n:.2f} per object; "
          + ", ".join(f"{v} {c / periods:.0f}" for v, c in idle.by_verb.most_common()) + ")")
    print(f"  requests per {SAMPLE_SECONDS:.0f}s: " + " ".join(f"{v:.0f}" for v in idle.per_sample))
    print(f"operator RSS with {n} BEMServices: {rss[0]:.1f} MB now, {rss[1]:.1f} MB peak "
          "(target <= 150 MB)")


def admin_secret(api: Any, live: dict[str, Any]) -> None:
    """The admin token Secret the operator creates for a new BEMService: one of the objects it
    makes, so the direct side makes it too."""
    from bem_operator.builders import parse_bemservice
    from bem_operator.builders.checkpoints import ADMIN_TOKEN_KEY, admin_secret_name
    from bem_operator.builders.labels import child_metadata

    spec = parse_bemservice(live)
    api.create({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": child_metadata(spec, admin_secret_name(spec.name)),
                "data": {ADMIN_TOKEN_KEY: "dG9rZW4="}})


def operator_writes(api: Any, live: dict[str, Any]) -> None:
    """What the operator writes for a new BEMService beside its objects: a Pending and a
    Ready status (merge patches), the Ready Event."""
    from bem_operator.status import Observed, compute_status

    meta = live["metadata"]
    pending = compute_status(Observed(generation=meta["generation"], selector="x"), None,
                             "2026-01-01T00:00:00Z")
    api.patch_status(meta["namespace"], meta["name"], pending)
    api.patch_status(meta["namespace"], meta["name"], {**pending, "readyReplicas": 2})
    api.post_event(live, "Normal", "Ready", f"BEMService {meta['name']} is ready")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--idle-seconds", type=float, default=90.0)
    parser.add_argument("--settle-seconds", type=float, default=10.0)
    parser.add_argument("--direct-extras", action="store_true",
                        help="the direct side also makes the writes the operator makes "
                             "beside its objects (two status patches, one Event), so the "
                             "ratio shows the operator's own cost")
    parser.add_argument("--timeout", type=float, default=900.0, help="per phase")
    parser.add_argument("--kubeconfig", type=Path,
                        default=os.environ.get("BEM_DEVCLUSTER_KUBECONFIG") or None)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from devcluster.cluster import DevCluster

    cluster = None if args.kubeconfig else DevCluster.start()
    try:
        return bench(args, cluster)
    finally:
        if cluster is not None:
            cluster.stop()


def bench(args: argparse.Namespace, cluster: Any) -> int:
    from bem_operator.builders import BuildOptions, build_children
    from bem_operator.k8s import KubeApi, Transport, credentials
    from bem_operator.watches import WATCHED_KINDS
    from bem_operator.settings import OperatorSettings
    from kubernetes import client, config

    kubeconfig = Path(args.kubeconfig or cluster.kubeconfig)
    kubectl = cluster.kubectl_bin if cluster else "kubectl"
    run = install_crds(kubectl, kubeconfig)  # the operator watches BEMCheckpoints too
    clients = []
    for pool in (SUBMITTERS * 2, 2 * len(CHILD_PATHS) + 2):  # requests; watch streams
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        configuration.connection_pool_maxsize = pool
        clients.append(client.ApiClient(configuration))
    api_client, watch_client = clients
    os.environ["KUBECONFIG"] = str(kubeconfig)  # the direct side's client, as the operator's
    api = KubeApi(Transport(credentials(), connections=SUBMITTERS * 2))
    options = BuildOptions(service_monitor_available=False)
    suffix, names = str(int(time.time())), [f"svc-{i:04d}" for i in range(args.count)]
    ns_direct, ns_operator = f"bench-direct-{suffix}", f"bench-operator-{suffix}"
    throttle = Throttle(kubeconfig.parent)  # a devcluster's kubeconfig sits in its state dir
    operator, succeeded = None, False
    try:
        for ns in (ns_direct, ns_operator):
            run("create", "namespace", ns)
        time.sleep(2)  # default ServiceAccounts appear, or pod creation is refused

        def direct_submit(name: str) -> None:
            live, _ = api.apply(bemservice(ns_direct, name, args.replicas), manager="bench-direct")
            for child in build_children(live, options):
                api.apply(child, manager="bench-direct")
            admin_secret(api, live)
            if args.direct_extras:
                operator_writes(api, live)
        direct, waited = Phase("direct", args.count), throttle.waited()
        run_phase(api_client, watch_client, direct, ns_direct, names, direct_submit,
                  CHILD_PATHS[0], deployment_ready, args.timeout)
        throttled = {c: [w - waited.get(c, 0.0)] for c, w in throttle.waited().items()}
        print(f"direct: all Ready after {direct.all_ready():.1f}s", flush=True)
        run("delete", "namespace", ns_direct, f"--timeout={args.timeout:.0f}s")  # a clean slate

        operator = Operator(kubeconfig, ns_operator)
        operator.wait_live()
        operated, waited = Phase("operator", args.count), throttle.waited()
        before, events_before = operator.requests(), operator.watch_events()
        reconciles_before = operator.reconciles()
        cpu_before = operator.cpu_seconds()
        run_phase(api_client, watch_client, operated, ns_operator, names,
                  lambda name: api.apply(bemservice(ns_operator, name, args.replicas),
                                         manager="bench"),
                  BEMSERVICES, bems_ready, args.timeout)
        created_requests = operator.requests() - before
        busy_cpu = operator.cpu_seconds() - cpu_before
        created_events = operator.watch_events() - events_before
        created_reconciles = operator.reconciles() - reconciles_before
        for c, w in throttle.waited().items():
            throttled.setdefault(c, [0.0]).append(w - waited.get(c, 0.0))
        print(f"operator: all Ready after {operated.all_ready():.1f}s; settling, then idle for "
              f"{args.idle_seconds:.0f}s", flush=True)
        time.sleep(args.settle_seconds)
        idle = idle_window(operator, args.idle_seconds)
        rss = (operator.proc_status_kib("VmRSS") / 1024, operator.proc_status_kib("VmHWM") / 1024)
        settings = OperatorSettings.from_env(os.environ)
        report(direct, operated, created_requests, operator.requests(), created_events,
               created_reconciles, busy_cpu,
               idle, rss, {c: (v[0], v[-1]) for c, v in throttled.items()}, settings.resync_seconds,
               2 + len(WATCHED_KINDS), settings.watch_server_timeout)
        succeeded = True
    finally:
        if operator is not None:
            operator.stop(succeeded)
        if cluster is None:  # an existing cluster keeps running: take our namespaces away
            for ns in (ns_direct, ns_operator):
                subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", "delete", "namespace",
                                ns, "--ignore-not-found", "--wait=false"], capture_output=True)
        for c in clients:
            c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""High availability of the operator on the real node: the chart's two replicas elect a leader
through the Lease; while a loop keeps changing BEMService specs, (a) the leader pod is deleted
and (b) the next leader's process is SIGKILLed from the host (PID 1 of a container ignores
SIGKILL sent from inside its PID namespace, so the host PID comes from containerd).

After each, a new replica holds the Lease within 20 s (measured from the action to the moment
a watch on the Lease sees the new holder, and printed). At the end every BEMService's children
reflect its last spec, each child exists once, and there were never two writers: the API
server's audit log (devcluster/audit.py) records every write of the operator's ServiceAccount
with the writer's User-Agent (bem_operator.leader.client_user_agent), and each holder's writes
end before the next holder's first write; the Lease's holder history (from the watch) names
each holder once, in the same order, with leaseTransitions counting every change.

BEMServices run 0 replicas: this measures the operator's writes, not runtime pods.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client, watch

from bem_operator.constants import OWNER_LABEL
from bem_operator.leader import client_user_agent
from devcluster import audit, realnode
from devcluster.health import wait_until

from .conftest import OPERATOR_NS
from .support import BAKED_IMAGE, figure, get_json

LEASE = "bem-operator"  # the chart's default: the release's full name
SERVICES = 4
CHANGE_INTERVAL = 0.3
MAX_CHANGES = 600  # the loop is bounded in count and in time
MAX_CHANGE_SECONDS = 300
TAKEOVER_BOUND = 20.0
CHILD_KINDS = ("deployments", "services", "poddisruptionbudgets", "horizontalpodautoscalers")


def ha_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "bem.ai/v1alpha1", "kind": "BEMService", "metadata": {"name": name},
        "spec": {"model": {"source": "Image", "basePath": "base", "checkpointPath": "bem"},
                 "replicas": 0,
                 "runtime": {"image": BAKED_IMAGE, "imagePullPolicy": "Never",
                             "env": [{"name": "HA_STEP", "value": "0"}]},
                 "monitoring": {"serviceMonitor": False}},
    }


class LeaseWatch(threading.Thread):
    """Every version of the Lease while the test runs: (local time, holder, transitions)."""

    def __init__(self, cluster: Any) -> None:
        super().__init__(daemon=True)
        self.cluster, self.history = cluster, []
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        api_client = self.cluster.api_client()
        leases, version = client.CoordinationV1Api(api_client), None
        try:
            while not self.stopped.is_set():
                stream = watch.Watch().stream(
                    leases.list_namespaced_lease, OPERATOR_NS, timeout_seconds=2,
                    field_selector=f"metadata.name={LEASE}", resource_version=version)
                for event in stream:
                    lease = event["object"]
                    version = lease.metadata.resource_version
                    self.history.append((time.monotonic(), lease.spec.holder_identity or "",
                                         lease.spec.lease_transitions or 0))
        except BaseException as exc:  # reported by the test, not lost in a thread
            self.error = exc
        finally:
            api_client.close()

    def holder(self) -> str:
        return self.history[-1][1] if self.history else ""

    def since(self, holder: str) -> list[tuple[float, str, int]]:
        """The history from the first version held by `holder` on."""
        start = next(i for i, (_, h, _) in enumerate(self.history) if h == holder)
        return self.history[start:]

    def holders(self, first: str) -> list[str]:
        """Each change of holder from `first` on, "" for a released Lease."""
        changes: list[str] = []
        for _, holder, _ in self.since(first):
            if not changes or changes[-1] != holder:
                changes.append(holder)
        return changes

    def new_holder_since(self, began: float, old: str) -> tuple[str, float]:
        for at, holder, _ in self.history:
            if at >= began and holder not in ("", old):
                return holder, at - began
        return "", 0.0


class SpecChanger(threading.Thread):
    """Changes one BEMService's spec after another; remembers the last value of each."""

    def __init__(self, cluster: Any, namespace: str, names: list[str]) -> None:
        super().__init__(daemon=True)
        self.cluster, self.namespace, self.names = cluster, namespace, names
        self.last = {name: "0" for name in names}
        self.count = 0
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + MAX_CHANGE_SECONDS
        try:
            while (not self.stopped.is_set() and self.count < MAX_CHANGES
                   and time.monotonic() < deadline):
                name, step = self.names[self.count % len(self.names)], str(self.count + 1)
                patch = {"spec": {"runtime": {"env": [{"name": "HA_STEP", "value": step}]}}}
                self.cluster.kubectl("patch", "bemservice", name, "-n", self.namespace,
                                     "--type=merge", "-p", json.dumps(patch))
                self.last[name] = step
                self.count += 1
                self.stopped.wait(CHANGE_INTERVAL)
        except BaseException as exc:
            self.error = exc


def operator_pods(cluster: Any) -> list[dict[str, Any]]:
    pods = get_json(cluster, "pods", "-n", OPERATOR_NS, "-l",
                    "app.kubernetes.io/instance=bem-operator")["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def pod_of(identity: str) -> str:
    return identity.rsplit("_", 1)[0]  # identity = <pod name>_<suffix>; pod names have no "_"


def host_pid(cluster: Any, pod_name: str) -> int:
    """The host PID of the pod's operator process (its container's init), from containerd."""
    pod = get_json(cluster, "pod", pod_name, "-n", OPERATOR_NS)
    [status] = pod["status"]["containerStatuses"]
    container_id = status["containerID"].split("://", 1)[1]
    tasks = realnode.ctr(realnode.NodeLayout(cluster.state_dir), "tasks", "ls").stdout
    for line in tasks.splitlines()[1:]:
        task, pid, *_ = line.split()
        if task == container_id:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            assert b"bem" in cmdline and int(pid) > 1, f"PID {pid} runs {cmdline!r}"
            return int(pid)
    raise AssertionError(f"containerd runs no task {container_id} of pod {pod_name}:\n{tasks}")


def take_over(lease: LeaseWatch, old: str, began: float, what: str) -> str:
    """Waits (at most TAKEOVER_BOUND from `began`) for a new holder; prints how long it took."""
    left = TAKEOVER_BOUND - (time.monotonic() - began)
    wait_until(f"a new leader after {what}", lambda: lease.new_holder_since(began, old)[0],
               timeout=max(left, 0.1), interval=0.1)
    holder, seconds = lease.new_holder_since(began, old)
    figure(f"leader {pod_of(holder)} holds the Lease {seconds:.1f}s after {what}")
    return holder


def children_reflect_specs(cluster: Any, namespace: str, changer: SpecChanger) -> bool:
    for name, step in changer.last.items():
        dep = get_json(cluster, "deployment", name, "-n", namespace)
        env = {e["name"]: e.get("value") for c in dep["spec"]["template"]["spec"]["containers"]
               for e in c.get("env", [])}
        bems = get_json(cluster, "bemservice", name, "-n", namespace)
        if env.get("HA_STEP") != step or bems.get("status", {}).get(
                "observedGeneration") != bems["metadata"]["generation"]:
            return False
    return True


def _time(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def writes_by_holder(cluster: Any, holders: list[str], since: datetime,
                     account: str) -> dict[str, list[dict[str, Any]]]:
    """The operator account's successful writes since `since`, by the holder that sent them;
    a write no holder sent fails the test (a standby, or a client without the identity)."""
    agents = {client_user_agent(h): h for h in holders}
    found: dict[str, list[dict[str, Any]]] = {h: [] for h in holders}
    strangers = []
    for event in audit.events(cluster.state_dir):
        if (event["user"]["username"] != account or event["verb"] not in audit.WRITE_VERBS
                or event.get("responseStatus", {}).get("code", 0) >= 400
                or _time(event["requestReceivedTimestamp"]) < since):
            continue
        holder = agents.get(event.get("userAgent", ""))
        if holder is None:
            strangers.append(event)
        else:
            found[holder].append(event)
    assert not strangers, "writes by no Lease holder: " + json.dumps(
        [(e["userAgent"], e["verb"], e["objectRef"]) for e in strangers[:10]])
    return found


def assert_one_writer_at_a_time(found: dict[str, list[dict[str, Any]]],
                                holders: list[str]) -> None:
    for before, after in zip(holders, holders[1:], strict=False):
        assert found[before] and found[after], f"no write from {before} or {after}"
        last = max(_time(e["stageTimestamp"]) for e in found[before])
        first = min(_time(e["requestReceivedTimestamp"]) for e in found[after])
        assert last < first, (
            f"{pod_of(before)} still wrote at {last.isoformat()}, after {pod_of(after)} began "
            f"writing at {first.isoformat()}")
        figure(f"writes: {pod_of(before)} {len(found[before])} until {last.time()}, "
               f"{pod_of(after)} from {first.time()}")


def no_duplicate_children(cluster: Any, namespace: str, names: list[str]) -> None:
    for kind in CHILD_KINDS:
        items = get_json(cluster, kind, "-n", namespace)["items"]
        owners = [i["metadata"].get("labels", {}).get(OWNER_LABEL) for i in items]
        for name in names:
            mine = [i["metadata"]["name"] for i, o in zip(items, owners, strict=True) if o == name]
            assert len(mine) <= 1 and all(m == name for m in mine), (kind, name, mine)
            if kind in ("deployments", "services"):
                assert mine == [name], (kind, name, mine)


def test_a_new_leader_takes_over_and_no_change_is_lost(
        real_cluster: Any, operator_release: str, real_ns: str) -> None:
    account = f"system:serviceaccount:{OPERATOR_NS}:{operator_release}"
    since = datetime.now().astimezone()
    lease = LeaseWatch(real_cluster)
    lease.start()
    names = [f"ha-{i}" for i in range(SERVICES)]
    changer = SpecChanger(real_cluster, real_ns, names)
    try:
        wait_until("a leader among the operator pods", lambda: pod_of(lease.holder()) in {
            p["metadata"]["name"] for p in operator_pods(real_cluster)}, timeout=60)
        first = lease.holder()
        for name in names:
            real_cluster.kubectl("apply", "-n", real_ns, "-f", "-",
                                 input=json.dumps(ha_service(name)))
        changer.start()
        # (a) The leader pod is deleted: it releases the Lease on SIGTERM.
        began = time.monotonic()
        real_cluster.kubectl("delete", "pod", pod_of(first), "-n", OPERATOR_NS, "--wait=false")
        second = take_over(lease, first, began, "deleting the leader pod")
        real_cluster.kubectl("rollout", "status", "deployment/bem-operator", "-n", OPERATOR_NS,
                             "--timeout=180s", timeout=200)
        # (b) The new leader's process is killed outright: the Lease runs out.
        pid = host_pid(real_cluster, pod_of(second))
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        third = take_over(lease, second, began, "SIGKILL of the leader's process")
        time.sleep(3 * CHANGE_INTERVAL)  # a few changes reach the third leader too
        changer.stopped.set()
        changer.join(timeout=30)
        assert changer.error is None, changer.error
        figure(f"{changer.count} spec changes while the leader changed twice")
        wait_until("every child reflecting its BEMService's last spec",
                   lambda: children_reflect_specs(real_cluster, real_ns, changer), timeout=120,
                   interval=1)
        no_duplicate_children(real_cluster, real_ns, names)
        # The writers, from the audit log and the Lease's history.
        time.sleep(1)  # the last audit lines are flushed
        lease.stopped.set()
        lease.join(timeout=30)
        assert lease.error is None, lease.error
        # Released on deletion (""), not on SIGKILL; each holder once; every change counted.
        assert lease.holders(first) == [first, "", second, third], lease.holders(first)
        counts = {h: {t for _, held, t in lease.since(first) if held == h}
                  for h in (first, second, third)}
        base = lease.since(first)[0][2]
        assert counts == {first: {base}, second: {base + 1}, third: {base + 2}}, counts
        found = writes_by_holder(real_cluster, [first, second, third], since, account)
        assert_one_writer_at_a_time(found, [first, second, third])
    except BaseException:
        logs = real_cluster.kubectl("logs", "-n", OPERATOR_NS, "-l",
                                    "app.kubernetes.io/instance=bem-operator", "--prefix",
                                    "--tail=80", check=False)
        print(f"----- operator logs -----\n{logs.stdout}{logs.stderr}\n"
              f"----- Lease history -----\n{lease.history[-40:]}")
        raise
    finally:
        changer.stopped.set()
        lease.stopped.set()
        # Later tests expect fresh operator pods (no restarts).
        real_cluster.kubectl("rollout", "restart", "deployment/bem-operator", "-n", OPERATOR_NS,
                             check=False)
        real_cluster.kubectl("rollout", "status", "deployment/bem-operator", "-n", OPERATOR_NS,
                             "--timeout=180s", timeout=200, check=False)

"""Leader election (bem_operator.leader) against the local control plane's real API server.

Two electors in one process share one Lease. Each has its own injected local clock, frozen
unless a test moves it, while the retry period is real and short (0.1 s): a Lease can then
only expire when the test says so, and every "not yet" is checked after a counted number of
real requests, never after a sleep. The leader's client is broken for real (its requests go
to a closed port), not faked.
"""
from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from operator_support import RBAC

from bem_operator.k8s import ApiError, KubeApi, Transport, credentials
from bem_operator.leader import LeaderElector
from bem_operator.metrics import LeaderMetrics
from devcluster.processes import free_port

pytestmark = pytest.mark.e2e

LEASE = "bem-operator"
TIMINGS = {"lease_seconds": 15.0, "renew_deadline": 10.0, "retry_period": 0.1}
WAIT = 30.0  # bound of every wait for something that takes a few retry periods


class Clock:
    """A local clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingApi(KubeApi):
    """The real client, counting its requests (a "not yet" is checked after N more)."""

    calls = 0

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls += 1
        return super().request(method, path, **kwargs)


def api_for(kubeconfig: Path) -> CountingApi:
    with mock.patch.dict(os.environ, {"KUBECONFIG": str(kubeconfig)}):
        return CountingApi(Transport(credentials()), request_timeout=5)


@dataclass
class Candidate:
    name: str
    elector: LeaderElector
    api: CountingApi
    clock: Clock
    log: list[str]  # shared by the candidates of a test: the order of what happened
    task: asyncio.Task[None] | None = None
    working: bool = False
    work_cancelled: int = field(default=0)

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.elector.run(self._started, self._stopped))

    def _started(self) -> Awaitable[None]:
        self.log.append(f"{self.name} started")
        return self._work()

    async def _work(self) -> None:  # stands for the operator's writers
        self.working = True
        try:
            await asyncio.Event().wait()
        finally:
            self.working = False
            self.work_cancelled += 1
            self.log.append(f"{self.name} work stopped")

    def _stopped(self) -> None:
        self.log.append(f"{self.name} stopped")

    async def attempts(self, count: int) -> None:
        """Waits until the elector has sent `count` more requests (its client counts them)."""
        target = self.api.calls + count
        await until(f"{count} more requests from {self.name}", lambda: self.api.calls >= target)

    def break_client(self) -> None:
        """Sends this candidate's requests to a port nothing listens on."""
        self.api._transport.server = f"https://127.0.0.1:{free_port()}"

    def sample(self, name: str, **labels: str) -> float:
        return self.elector.metrics.registry.get_sample_value(name, labels) or 0.0


async def until(what: str, probe: Callable[[], Any], timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not probe():
        if loop.time() > deadline:
            raise AssertionError(f"Timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


def candidate(name: str, kubeconfig: Path, namespace: str, log: list[str],
              lease: str = LEASE) -> Candidate:
    api, clock = api_for(kubeconfig), Clock()
    elector = LeaderElector(api, namespace, lease, f"{name}_id", clock=clock,
                            metrics=LeaderMetrics(), **TIMINGS)
    return Candidate(name, elector, api, clock, log)


def lease_of(cluster: Any, namespace: str, name: str = LEASE) -> dict[str, Any]:
    _, lease = api_for(cluster.kubeconfig).request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")
    return lease["spec"]


async def stop(*candidates: Candidate) -> None:
    """Cancels the candidates' loops; a loop that does not end (a lost cancellation) fails."""
    tasks = {c.task for c in candidates if c.task}
    for task in tasks:
        task.cancel()
    if tasks:
        _, running = await asyncio.wait(tasks, timeout=WAIT)
        assert not running, "an elector kept running after it was cancelled"


async def leading_pair(cluster: Any, namespace: str) -> tuple[Candidate, Candidate, list[str]]:
    """a leads (started first), b stands by and has read a's record at least twice."""
    log: list[str] = []
    a = candidate("a", cluster.kubeconfig, namespace, log)
    b = candidate("b", cluster.kubeconfig, namespace, log)
    a.start()
    await until("a leading", lambda: a.elector.is_leader)
    b.start()
    await b.attempts(2)
    return a, b, log


def test_exactly_one_of_two_candidates_leads(cluster: Any, namespace: str) -> None:
    async def scenario() -> None:
        log: list[str] = []
        a = candidate("a", cluster.kubeconfig, namespace, log)
        b = candidate("b", cluster.kubeconfig, namespace, log)
        a.start(), b.start()
        try:
            await until("a leader", lambda: a.elector.is_leader or b.elector.is_leader)
            await a.attempts(20)
            await b.attempts(20)
            leaders = [c for c in (a, b) if c.elector.is_leader]
            assert len(leaders) == 1, log
            [leader] = leaders
            [standby] = [c for c in (a, b) if c is not leader]
            assert log == [f"{leader.name} started"]
            assert leader.working and not standby.working
            spec = lease_of(cluster, namespace)
            assert spec["holderIdentity"] == leader.elector.identity
            assert (spec["leaseDurationSeconds"], spec["leaseTransitions"]) == (15, 0)
            assert leader.sample("bem_operator_leader") == 1
            assert standby.sample("bem_operator_leader") == 0
            assert leader.sample("bem_operator_leader_transitions_total", change="gained") == 1
            assert standby.sample("bem_operator_leader_transitions_total", change="gained") == 0
        finally:
            await stop(a, b)
    asyncio.run(scenario())


def test_failing_renewals_end_leadership_at_the_deadline_and_the_lease_expires(
        cluster: Any, namespace: str) -> None:
    async def scenario() -> None:
        a, b, log = await leading_pair(cluster, namespace)
        try:
            a.break_client()
            await a.attempts(3)  # three renewals refused at the TCP level
            assert a.elector.is_leader, "a stopped leading before its renew deadline"
            a.clock.now += TIMINGS["renew_deadline"] - 0.5
            assert a.elector.is_leader
            a.clock.now += 0.5
            assert not a.elector.is_leader, "a still leads at its renew deadline"
            await until("a's work cancelled", lambda: a.work_cancelled == 1)
            assert log[-2:] == ["a work stopped", "a stopped"]
            assert a.sample("bem_operator_leader") == 0
            assert a.sample("bem_operator_leader_transitions_total", change="lost") == 1
            # b takes the Lease only once it has seen no renewal for a lease duration of its
            # own clock: not before, however many times it reads the unchanged record.
            await b.attempts(10)
            b.clock.now += TIMINGS["lease_seconds"] - 0.5
            await b.attempts(10)
            assert not b.elector.is_leader and "b started" not in log
            b.clock.now += 0.5
            await until("b leading", lambda: b.elector.is_leader)
            spec = lease_of(cluster, namespace)
            assert spec["holderIdentity"] == b.elector.identity
            assert spec["leaseTransitions"] == 1
            assert log.index("a stopped") < log.index("b started")
        finally:
            await stop(a, b)
    asyncio.run(scenario())


def test_graceful_release_hands_over_without_waiting_for_expiry(
        cluster: Any, namespace: str) -> None:
    async def scenario() -> None:
        a, b, log = await leading_pair(cluster, namespace)
        try:
            a.task.cancel()
            # b's clock never moves: only a released Lease can be taken.
            await until("b leading after a's release", lambda: b.elector.is_leader)
            assert a.task.done() and not a.elector.is_leader
            # a stopped its work before it released, so the two never wrote at once.
            assert log == ["a started", "a work stopped", "a stopped", "b started"]
            spec = lease_of(cluster, namespace)
            assert spec["holderIdentity"] == b.elector.identity
            assert spec["leaseTransitions"] == 1
            # b's release on its own cancellation leaves the Lease free, the count kept.
            await stop(b)
            spec = lease_of(cluster, namespace)
            assert not spec.get("holderIdentity") and spec["leaseTransitions"] == 1
        finally:
            await stop(a, b)
    asyncio.run(scenario())


def test_expiry_is_timed_from_local_observation_not_from_remote_timestamps(
        cluster: Any, namespace: str) -> None:
    """A record renewed "long ago" by another replica's clock still gets a full lease duration:
    only the local clock decides (client-go's observedTime)."""
    async def scenario() -> None:
        stale = "2001-01-01T00:00:00.000000Z"
        api_for(cluster.kubeconfig).request(
            "POST", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases",
            body={"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                  "metadata": {"name": LEASE},
                  "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 15,
                           "acquireTime": stale, "renewTime": stale, "leaseTransitions": 4}})
        log: list[str] = []
        a = candidate("a", cluster.kubeconfig, namespace, log)
        a.start()
        try:
            await a.attempts(10)
            assert not a.elector.is_leader, "a took a Lease by its remote renewTime"
            a.clock.now += 15
            await until("a leading", lambda: a.elector.is_leader)
            spec = lease_of(cluster, namespace)
            assert (spec["holderIdentity"], spec["leaseTransitions"]) == (a.elector.identity, 5)
            assert spec["acquireTime"] != stale
        finally:
            await stop(a)
    asyncio.run(scenario())


def test_the_operator_account_may_hold_its_own_lease_only(
        cluster: Any, operator_kubeconfig: Path) -> None:
    """manifests/rbac.yaml: the operator's ServiceAccount takes, renews and releases the Lease
    "bem-operator" in its namespace; a Lease of another name is refused."""
    namespace = "bem-system"
    assert RBAC.is_file()
    cluster.kubectl("delete", "lease", LEASE, "-n", namespace, "--ignore-not-found")

    async def scenario() -> None:
        log: list[str] = []
        own = candidate("own", operator_kubeconfig, namespace, log)
        other = candidate("other", operator_kubeconfig, namespace, log, lease="not-ours")
        own.start(), other.start()
        try:
            await until("the operator account leading", lambda: own.elector.is_leader)
            await own.attempts(5)  # renewals (update, by name) pass too
            assert own.elector.is_leader
            await other.attempts(5)
            assert not other.elector.is_leader
            with pytest.raises(ApiError) as refused:
                other.api.request(
                    "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/not-ours")
            assert refused.value.status == 403
            await stop(own)
            assert not lease_of(cluster, namespace).get("holderIdentity")
        finally:
            await stop(own, other)
            cluster.kubectl("delete", "lease", LEASE, "-n", namespace, "--ignore-not-found")
    asyncio.run(scenario())

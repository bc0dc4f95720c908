"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

Two or more operator replicas share one Lease; the one named in spec.holderIdentity leads and
is the only one that writes. A candidate takes the Lease when it is free (no holder: released)
or when its record has not changed for leaseDurationSeconds as measured by the candidate's own
clock from the moment it first saw that record (client-go's observedTime): remote timestamps are
never compared with the local clock, so clock skew between nodes cannot hand the Lease over
early. The leader renews every retry period; when no renewal succeeded for the renew deadline,
or a read shows another holder, it stops leading at once (`is_leader` turns False by the clock,
before any loop notices). On cancellation (graceful shutdown) the leader stops its work, then
releases the Lease (holder cleared, like controller-runtime's ReleaseOnCancel), so a standby
takes over within a retry period instead of a lease duration.

Settings (environment, see `LeaderSettings.from_env`):
  BEM_OPERATOR_LEADER_ELECTION  true/false (default false; the chart turns it on)
  BEM_OPERATOR_LEASE_NAME       the Lease's name (default bem-operator)
  BEM_OPERATOR_LEASE_NAMESPACE  its namespace (default $POD_NAMESPACE, from the downward API)
  POD_NAME                      this replica's identity (default the host name), plus a suffix
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import inspect
import logging
import random
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bem_operator.k8s import ApiError, KubeApi
from bem_operator.metrics import LeaderMetrics

__all__ = ["LeaderElector", "LeaderSettings", "LeaderSettingsError", "client_user_agent"]

logger = logging.getLogger("bem_operator.leader")

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
# Standbys poll every retry period plus up to this fraction of it (client-go jitters by 1.2;
# less here so that a standby sees the last renewal within 3 s and takes over a killed leader
# within 15 + 3 s, inside the 20 s the operator promises).
ACQUIRE_JITTER = 0.5
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class LeaderSettingsError(ValueError):
    """An election setting holds a value the operator cannot use."""


def client_user_agent(identity: str) -> str:
    """The User-Agent of every request a replica sends: the API server's audit log then tells
    the replicas' writes apart (they share one ServiceAccount, and a restarted container
    keeps its pod name but gets a new identity)."""
    return f"bem-operator/{identity}"


@dataclasses.dataclass(frozen=True)
class LeaderSettings:
    enabled: bool = False
    lease_name: str = "bem-operator"
    lease_namespace: str = ""
    identity: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LeaderSettings:
        raw = env.get("BEM_OPERATOR_LEADER_ELECTION", "").strip().lower()
        if raw not in _TRUE | _FALSE:
            raise LeaderSettingsError(
                f"BEM_OPERATOR_LEADER_ELECTION={raw!r} is not a boolean: give true or false")
        name = env.get("BEM_OPERATOR_LEASE_NAME", "").strip() or cls.lease_name
        if not _DNS_SUBDOMAIN.match(name):
            raise LeaderSettingsError(
                f"BEM_OPERATOR_LEASE_NAME={name!r} is not a valid object name: use lower case "
                "letters, digits, '-' and '.'")
        namespace = (env.get("BEM_OPERATOR_LEASE_NAMESPACE", "").strip()
                     or env.get("POD_NAMESPACE", "").strip())
        enabled = raw in _TRUE
        if enabled and not namespace:
            raise LeaderSettingsError(
                "BEM_OPERATOR_LEADER_ELECTION is on but the Lease has no namespace: set "
                "BEM_OPERATOR_LEASE_NAMESPACE, or POD_NAMESPACE from the downward API "
                "(fieldRef metadata.namespace)")
        pod = env.get("POD_NAME", "").strip() or socket.gethostname()
        # A restarted container keeps its pod name; the suffix makes it a new candidate.
        return cls(enabled=enabled, lease_name=name, lease_namespace=namespace,
                   identity=f"{pod}_{secrets.token_hex(4)}")


def _now_micro() -> str:
    """A MicroTime for the record (informational: expiry never reads it)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Campaigns for one Lease until cancelled; see the module docstring for the rules."""

    def __init__(self, api: KubeApi, namespace: str, name: str, identity: str, *,
                 lease_seconds: float = 15.0, renew_deadline: float = 10.0,
                 retry_period: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 metrics: LeaderMetrics | None = None) -> None:
        if not lease_seconds > renew_deadline > retry_period > 0:
            raise ValueError("leader election needs lease_seconds > renew_deadline > "
                             f"retry_period > 0, got {lease_seconds}, {renew_deadline}, "
                             f"{retry_period}")
        self.api, self.namespace, self.name, self.identity = api, namespace, name, identity
        self.lease_seconds, self.renew_deadline = lease_seconds, renew_deadline
        self.retry_period, self.clock = retry_period, clock
        self.metrics = metrics or LeaderMetrics()
        self._lease: dict[str, Any] | None = None  # the last Lease read or written
        self._observed_spec: dict[str, Any] | None = None
        self._observed_time = 0.0  # local clock when _observed_spec was first seen
        self._renewed_at: float | None = None  # local clock of our last successful write
        self._leading = False
        self._last_error = ""

    # ---- state -------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True while this replica holds the Lease and renewed it within the renew deadline."""
        return (self._leading and self._renewed_at is not None
                and self.clock() - self._renewed_at < self.renew_deadline
                and self._holder() == self.identity)

    def _holder(self) -> str:
        return (self._observed_spec or {}).get("holderIdentity") or ""

    def _observed_expiry(self) -> float:
        duration = (self._observed_spec or {}).get("leaseDurationSeconds") or self.lease_seconds
        return self._observed_time + float(duration)

    # ---- the loop ----------------------------------------------------------------------
    async def run(self, on_started_leading: Callable[[], Awaitable[None] | None],
                  on_stopped_leading: Callable[[], None]) -> None:
        """Acquire, lead, lose, and campaign again, until cancelled. A coroutine returned by
        on_started_leading runs as a task, cancelled as soon as leadership is lost (and awaited
        before on_stopped_leading is called). On cancellation a leader stops that work first
        and then releases the Lease."""
        work: asyncio.Task[None] | None = None
        try:
            while True:
                await self._acquire()
                self._set_leading(True)
                started = on_started_leading()
                if inspect.isawaitable(started):
                    work = asyncio.ensure_future(started)
                await self._renew_until_lost(work)
                await self._stop(work, on_stopped_leading)
                work = None
        except asyncio.CancelledError:
            if self._leading:
                await self._stop(work, on_stopped_leading, cancelled=True)
                await self._release()
            raise

    async def _acquire(self) -> None:
        while True:
            if await self._try_acquire_or_renew():
                return
            delay = self.retry_period * (1 + ACQUIRE_JITTER * random.random())
            until_expiry = self._observed_expiry() - self.clock()
            if self._holder() and 0 < until_expiry < delay:
                delay = until_expiry + 0.01  # try right when the holder's lease runs out
            await asyncio.sleep(delay)

    async def _renew_until_lost(self, work: asyncio.Task[None] | None) -> None:
        while self.is_leader:
            await asyncio.sleep(self.retry_period)
            if work is not None and work.done() and not work.cancelled() and work.exception():
                logger.error("Stopped leading: the leader's work failed",
                             exc_info=work.exception())
                return
            if not self.is_leader:
                return
            await self._try_acquire_or_renew()

    async def _stop(self, work: asyncio.Task[None] | None, on_stopped_leading: Callable[[], None],
                    cancelled: bool = False) -> None:
        self._set_leading(False, cancelled)
        if work is not None and not work.done():
            work.cancel()
            await asyncio.wait({work})  # its end, whatever it was; our own cancel propagates
        on_stopped_leading()

    def _set_leading(self, leading: bool, graceful: bool = False) -> None:
        self._leading = leading
        self.metrics.leader.set(1 if leading else 0)
        self.metrics.transitions.labels(change="gained" if leading else "lost").inc()
        where = f"Lease {self.namespace}/{self.name}"
        if leading:
            logger.info("Started leading as %s (%s)", self.identity, where)
        elif graceful:
            logger.info("Stopped leading as %s on shutdown; releasing %s", self.identity, where)
        else:
            logger.warning("Lost leadership as %s (%s, now held by %r): stopped writing",
                           self.identity, where, self._holder() or None)

    # ---- one attempt (client-go's tryAcquireOrRenew) -------------------------------------
    async def _try_acquire_or_renew(self) -> bool:
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for loses a cancellation that arrives
            # as the attempt completes, and a cancelled leader must stop.
            async with asyncio.timeout(self.renew_deadline):
                result = await self._attempt()
        except (ApiError, TimeoutError) as exc:
            # Outages are logged once by the client; a refusal (RBAC, a missing namespace)
            # is logged when it first appears, not every retry period.
            error = str(exc) or type(exc).__name__
            quiet = isinstance(exc, TimeoutError) or exc.retryable
            if not quiet and error != self._last_error:
                logger.warning("Could not take or renew Lease %s/%s: %s", self.namespace,
                               self.name, error)
            self._last_error = error
            return False
        self._last_error = ""
        return result

    async def _attempt(self) -> bool:
        now = self.clock()
        # Fast path: the leader updates its own last written Lease without reading it first.
        if self._leading and self._lease is not None and self._holder() == self.identity:
            try:
                if await self._write(self._renewed(self._lease), now):
                    return True
            except ApiError as exc:
                logger.debug("Lease %s/%s: optimistic renewal failed (%s), reading it",
                             self.namespace, self.name, exc)
        lease = await self._call("GET", self._path(self.name))
        if lease is None:
            return await self._write(self._renewed(None), now, create=True)
        spec = lease.get("spec") or {}
        self._lease = lease
        if spec != self._observed_spec:
            self._observed_spec, self._observed_time = spec, now
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and now < self._observed_expiry():
            return False
        return await self._write(self._renewed(lease), now)

    def _renewed(self, lease: dict[str, Any] | None) -> dict[str, Any]:
        """The Lease with this replica as holder; transitions counted when the holder changes."""
        stamp = _now_micro()
        body = copy.deepcopy(lease) if lease else {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace}, "spec": {}}
        old = body.get("spec") or {}
        spec = {"holderIdentity": self.identity,
                "leaseDurationSeconds": max(1, round(self.lease_seconds)),
                "acquireTime": old.get("acquireTime") or stamp, "renewTime": stamp,
                "leaseTransitions": old.get("leaseTransitions") or 0}
        if lease and old.get("holderIdentity") != self.identity:
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] += 1
        body["spec"] = spec
        return body

    async def _write(self, body: dict[str, Any], now: float, create: bool = False) -> bool:
        try:
            if create:
                written = await self._call("POST", self._path(), body)
            else:
                written = await self._call("PUT", self._path(self.name), body)
        except ApiError as exc:
            if exc.status == 409:  # another replica wrote first: read again next time
                return False
            raise
        assert written is not None
        self._lease, self._observed_spec = written, written.get("spec") or {}
        self._observed_time = self._renewed_at = now
        return True

    async def _release(self) -> None:
        """Clears the holder (leaseDurationSeconds 1, as client-go) so a standby takes over now.
        A renewal still in flight when the loop was cancelled may have moved the Lease on: on
        a conflict the Lease is read again and released if it is still ours."""
        lease = self._lease
        try:
            async with asyncio.timeout(self.renew_deadline):
                for _ in range(3):
                    if lease is None or (lease.get("spec") or {}).get(
                            "holderIdentity") != self.identity:
                        return
                    body = copy.deepcopy(lease)
                    stamp = _now_micro()
                    body["spec"] = {**body.get("spec", {}), "holderIdentity": "",
                                    "leaseDurationSeconds": 1, "acquireTime": stamp,
                                    "renewTime": stamp}
                    try:
                        await self._call("PUT", self._path(self.name), body)
                    except ApiError as exc:
                        if exc.status != 409:
                            raise
                        lease = await self._call("GET", self._path(self.name))
                        continue
                    logger.info("Released Lease %s/%s", self.namespace, self.name)
                    return
                raise ApiError(409, "the Lease kept changing")
        except (ApiError, TimeoutError) as exc:  # the standby waits for the lease to run out
            logger.warning("Could not release Lease %s/%s (%s): a standby takes over when it "
                           "expires", self.namespace, self.name, exc)

    # ---- I/O -----------------------------------------------------------------------------
    def _path(self, name: str | None = None) -> str:
        path = LEASES.format(namespace=self.namespace)
        return f"{path}/{name}" if name else path

    async def _call(self, method: str, path: str,
                    body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                return self.api.request(method, path, body=body)[1]
            except ApiError as exc:
                if exc.status == 404 and method == "GET":
                    return None
                raise
        return await asyncio.to_thread(call)

"""Entry point: `bem-operator` (or `python -m bem_operator`).

Settings come from the environment (see settings.py); credentials from the
in-cluster service account, else from $KUBECONFIG / ~/.kube/config.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable

if __name__ == "__main__" and "kubernetes" not in sys.modules:
    # kopf imports the official client's generated models whenever that package is installed
    # (11 MB, to accept its objects in kopf.adopt() and the like); nothing here uses them. The
    # image does not install it; a development environment does, for the tests, and the
    # operator started there should weigh what it weighs in its image.
    sys.modules["kubernetes"] = None  # type: ignore[assignment]

import kopf

from bem_operator.builders.kinds import CHILD_REGISTRY
from bem_operator.controller import Controller
from bem_operator.handlers import register
from bem_operator.k8s import ApiError, CredentialsError, KubeApi
from bem_operator.leader import (LeaderElector, LeaderSettings, LeaderSettingsError,
                                 client_user_agent)
from bem_operator.metrics import LeaderMetrics
from bem_operator.outage import ConnectionErrorFilter
from bem_operator.settings import OperatorSettings, SettingsError
from bem_operator.watches import Watches, served_kinds

logger = logging.getLogger("bem_operator")


_SETTINGS_HELP = """settings (environment variables):
  BEM_OPERATOR_NAMESPACES      comma-separated namespaces to watch (empty: all)
  BEM_OPERATOR_METRICS_PORT    Prometheus metrics port (default 8000)
  BEM_OPERATOR_HEALTH_PORT     liveness endpoint /healthz port (default 8080)
  BEM_OPERATOR_BIND_ADDRESS    address of both endpoints (default 0.0.0.0)
  BEM_OPERATOR_RESYNC_SECONDS  periodic drift check (default 30)
  BEM_RUNTIME_IMAGE            runtime image when a BEMService names none
  BEM_OPERATOR_PROMETHEUS_ADDRESS  Prometheus that KEDA queries for autoscaling provider KEDA
                               (default http://prometheus-operated.monitoring.svc:9090)
  BEM_OPERATOR_LOG_LEVEL       DEBUG, INFO, WARNING or ERROR (default INFO)
  BEM_OPERATOR_LEADER_ELECTION true: only the holder of a coordination.k8s.io Lease writes
  BEM_OPERATOR_LEASE_NAME      the Lease (default bem-operator)
  BEM_OPERATOR_LEASE_NAMESPACE its namespace (default $POD_NAMESPACE)
credentials: the pod's service account, else $KUBECONFIG or ~/.kube/config"""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    # No flags of its own: settings come from the environment, as in a pod spec.
    parser = argparse.ArgumentParser(
        prog="bem-operator",
        description="Reconciles BEMService resources into runtime Deployments, Services, "
                    "HPAs or KEDA ScaledObjects, PodDisruptionBudgets and ServiceMonitors.",
        epilog=_SETTINGS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    _parse_args(argv)
    try:
        settings = OperatorSettings.from_env(os.environ)
        election = LeaderSettings.from_env(os.environ)
    except (SettingsError, LeaderSettingsError) as exc:
        print(f"bem-operator: {exc}", file=sys.stderr)
        return 2
    try:
        # The workers, and the periodic check and leader election beside them.
        api = KubeApi.from_environment(request_timeout=settings.request_timeout,
                                       connections=settings.workers + 2)
    except CredentialsError as exc:
        print(f"bem-operator: {exc}: run it in a pod with a service account, or point "
              "KUBECONFIG at a kubeconfig file", file=sys.stderr)
        return 2
    kopf.configure(verbose=settings.log_level == "DEBUG",
                   quiet=settings.log_level in ("WARNING", "ERROR"))
    if settings.log_level != "DEBUG":
        # "Handler succeeded" for every child event drowns the operator's own log lines.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # every liveness probe
    controller = Controller(api, settings)
    # Outages: one WARNING when the API server goes away, one INFO when it is back, no
    # tracebacks for what is only a lost connection (kopf's own lines included).
    calm = ConnectionErrorFilter(controller.connection, verbose=settings.log_level == "DEBUG")
    for handler in logging.getLogger().handlers:
        handler.addFilter(calm)
    try:
        controller.metrics.serve(settings.metrics_port, settings.bind_address)
    except OSError as exc:
        print(f"bem-operator: cannot serve metrics on {settings.bind_address}:"
              f"{settings.metrics_port} ({exc}): free the port or set BEM_OPERATOR_METRICS_PORT",
              file=sys.stderr)
        return 2
    logger.info("Started the metrics endpoint on %s:%s", settings.bind_address,
                settings.metrics_port)
    registry = kopf.OperatorRegistry()
    try:
        unserved = [child.kind for child in CHILD_REGISTRY if not api.serves(child)]
    except ApiError as exc:
        print(f"bem-operator: cannot reach the API server ({exc}): check KUBECONFIG or the "
              "pod's network and service account", file=sys.stderr)
        return 2

    served = served_kinds(unserved)
    # The watches hold a connection each, apart from the workers' pool.
    watch_api = KubeApi.from_environment(request_timeout=settings.request_timeout,
                                         connections=len(served) * max(1, len(settings.namespaces)))
    watch_api.connection = controller.connection
    watches = Watches(watch_api, served, settings.namespaces,
                      timeout_seconds=settings.watch_server_timeout,
                      read_timeout=settings.watch_client_timeout)
    register(registry, controller, _leading(controller, api, watch_api, election), watches)
    kopf.run(
        registry=registry,
        standalone=True,  # no kopf peering objects: leader election is ours (leader.py)
        clusterwide=settings.clusterwide,
        namespaces=settings.namespaces,
        liveness_endpoint=f"http://{settings.bind_address}:{settings.health_port}/healthz",
    )
    return 0


def _leading(controller: Controller, api: KubeApi, watch_api: KubeApi,
             election: LeaderSettings) -> Callable[[], Awaitable[None]]:
    """What runs beside kopf's watches for the life of the process: the workers, at once
    without leader election; with it, only while this replica holds the Lease. Every write
    asks the elector first, so a leader that lost the Lease writes nothing from that moment,
    even from a reconcile already running; the cache stays warm on a standby."""
    async def work() -> None:
        await controller.start_leading()
        try:
            await asyncio.Event().wait()  # until leadership or the process ends
        finally:
            await controller.stop_leading()

    if not election.enabled:
        return work
    for client in (api, watch_api):
        client.identify(election.identity, client_user_agent(election.identity))
    elector = LeaderElector(api, election.lease_namespace, election.lease_name,
                            election.identity, metrics=LeaderMetrics(controller.metrics.registry))
    api.may_write = lambda: elector.is_leader

    async def campaign() -> None:
        await elector.run(work, lambda: None)  # a lost Lease: campaign again, cache warm
    return campaign


if __name__ == "__main__":
    sys.exit(main())

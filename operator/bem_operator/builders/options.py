"""What the builders need to know about the cluster and the operator's own settings."""

from __future__ import annotations

from dataclasses import dataclass

from bem_operator.constants import DEFAULT_PROMETHEUS_ADDRESS, DEFAULT_RUNTIME_IMAGE


@dataclass(frozen=True)
class OperatorPods:
    """Where the operator's own pods run and the labels that select them: the runtime pods'
    NetworkPolicy admits the admin port from those pods only. namespace None (an operator run
    outside the cluster): no pod is admitted to the admin port."""
    namespace: str | None = None
    labels: tuple[tuple[str, str], ...] = (("app.kubernetes.io/name", "bem-operator"),)


@dataclass(frozen=True)
class BuildOptions:
    # False when the monitoring.coreos.com ServiceMonitor CRD is not installed: then no
    # ServiceMonitor is built (the API layer reports it in a status condition).
    service_monitor_available: bool = True
    # False when KEDA's ScaledObject CRD (keda.sh/v1alpha1) is not installed: then no
    # ScaledObject is built for spec.autoscaling.provider KEDA (the status says so: Degraded).
    keda_available: bool = True
    # False when Gateway API's HTTPRoute CRD (gateway.networking.k8s.io/v1) is not installed:
    # then no HTTPRoute is built for spec.gateway (the status says so: Degraded).
    gateway_api_available: bool = True
    # False when Traefik's Middleware CRD (traefik.io/v1alpha1) is not installed: then
    # spec.gateway.rateLimit builds no Middleware and the HTTPRoute names none (Degraded).
    traefik_middleware_available: bool = True
    # The Prometheus server KEDA's prometheus trigger queries (an operator setting).
    prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS
    # Used when spec.runtime.image is unset.
    default_runtime_image: str = DEFAULT_RUNTIME_IMAGE
    # Optional (reference, version) pairs of objects the pods read, such as
    # ("Secret/redis", "<resourceVersion>"): they enter the pod-template config hash so that
    # a changed Secret rolls the pods. Versions only; builders never see Secret contents.
    referenced_versions: tuple[tuple[str, str], ...] = ()
    # (name, path under /models) of the BEMCheckpoints placed on the pods: the start list's
    # ConfigMap only (never the pod template, so a BEMCheckpoint does not roll the pods).
    checkpoints: tuple[tuple[str, str], ...] = ()
    # The operator's pods, admitted to the runtime pods' admin port (network_policy.py).
    operator: OperatorPods = OperatorPods()

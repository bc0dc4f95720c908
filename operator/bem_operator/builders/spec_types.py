"""Typed view of a BEMService spec, after defaults (see spec.py for the parsing)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class ModelSpec:
    source: str  # "PersistentVolumeClaim" or "Image"
    claim_name: str | None
    base_path: str
    checkpoint_path: str
    served_name: str


@dataclass(frozen=True)
class AutoscalingSpec:
    provider: str  # "HPA" (our own HorizontalPodAutoscaler) or "KEDA" (a ScaledObject)
    min_replicas: int
    max_replicas: int
    target_requests_per_second: float
    target_cpu_utilization: int | None
    target_memory_utilization: int | None
    behavior: Mapping[str, Any] | None

    @property
    def utilization_targets(self) -> tuple[tuple[str, int], ...]:
        """(resource, percent of its request) of each Utilization target that is set."""
        return tuple((resource, percent) for resource, percent in
                     (("cpu", self.target_cpu_utilization),
                      ("memory", self.target_memory_utilization)) if percent is not None)


@dataclass(frozen=True)
class GpuSpec:
    count: int
    product: str | None


@dataclass(frozen=True)
class RolloutSpec:
    strategy: str  # "RollingUpdate" or "Recreate"
    max_surge: int | str | None
    max_unavailable: int | str | None


@dataclass(frozen=True)
class DisruptionBudgetSpec:
    enabled: bool
    min_available: int | str | None
    max_unavailable: int | str | None


@dataclass(frozen=True)
class ServiceSpec:
    type: str
    port: int
    node_port: int | None


@dataclass(frozen=True)
class MonitoringSpec:
    service_monitor: bool
    interval: str


@dataclass(frozen=True)
class CacheSpec:
    redis_url: SecretKeyRef
    ttl_seconds: int


@dataclass(frozen=True)
class RuntimeSpec:
    image: str | None
    image_pull_policy: str | None
    image_pull_secrets: tuple[str, ...]
    env: tuple[Mapping[str, Any], ...]
    extra_args: tuple[str, ...]
    log_level: str
    # The fields of builders/runtime_fields.py that are set (under spec.runtime, spec.model,
    # ...), as the runtime's env var -> value.
    settings: Mapping[str, int | float]
    startup_timeout_seconds: int


@dataclass(frozen=True)
class BEMServiceSpec:
    name: str
    namespace: str
    uid: str
    model: ModelSpec
    replicas: int | None  # None while autoscaling owns the replica count
    autoscaling: AutoscalingSpec | None
    resources: Mapping[str, Mapping[str, Any]]
    gpu: GpuSpec
    node_selector: Mapping[str, str]
    tolerations: tuple[Mapping[str, Any], ...]
    affinity: Mapping[str, Any] | None
    rollout: RolloutSpec
    disruption_budget: DisruptionBudgetSpec
    service: ServiceSpec
    monitoring: MonitoringSpec
    auth: SecretKeyRef | None
    cache: CacheSpec | None
    runtime: RuntimeSpec

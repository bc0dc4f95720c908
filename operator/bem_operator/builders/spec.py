"""Typed, defaulted view of a BEMService spec.

The API server already applies the CRD's defaults and rules; this module applies the same
defaults again (so objects that never went through an API server, as in unit tests, behave the
same) and re-checks the cross-field rules, raising SpecError with the field path so that an
operator running against an older CRD still reports an actionable message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bem_operator.builders.fields import (
    DEFAULTS,
    SpecError,
    is_zero,
    opt_bool,
    opt_int,
    opt_int_or_percent,
    opt_list,
    opt_map,
    opt_num,
    opt_str,
    str_map,
)
from bem_operator.builders.runtime_fields import OPERATOR_FLAGS, RESERVED_ENV, read_runtime_fields
from bem_operator.builders.spec_types import (
    AutoscalingSpec,
    BEMServiceSpec,
    CacheSpec,
    DisruptionBudgetSpec,
    GpuSpec,
    ModelSpec,
    MonitoringSpec,
    RolloutSpec,
    RuntimeSpec,
    SecretKeyRef,
    ServiceSpec,
)

__all__ = ["DEFAULTS", "SpecError", "BEMServiceSpec", "parse_bemservice"]


def parse_bemservice(bems: Mapping[str, Any]) -> BEMServiceSpec:
    """Parses a whole BEMService object (metadata + spec) into a defaulted, checked view."""
    meta = opt_map(bems, "metadata", "metadata") or {}
    name = opt_str(meta, "name", "metadata.name")
    namespace = opt_str(meta, "namespace", "metadata.namespace")
    uid = opt_str(meta, "uid", "metadata.uid")
    for value, path in ((name, "metadata.name"), (namespace, "metadata.namespace"), (uid, "metadata.uid")):
        if not value:
            raise SpecError(path, "is required to build child objects")
    spec = opt_map(bems, "spec", "spec")
    if spec is None:
        raise SpecError("spec", "is required")
    autoscaling = _autoscaling(spec)
    replicas = opt_int(spec, "replicas", "spec.replicas", minimum=0)
    if replicas is not None and autoscaling is not None:
        raise SpecError("spec.replicas", "set either spec.replicas or spec.autoscaling, not both")
    if replicas is None and autoscaling is None:
        replicas = DEFAULTS["replicas"]
    resources = _resources(spec)
    gpu = _gpu(spec, resources)
    _check_utilization_requests(autoscaling, resources)
    monitoring = _monitoring(spec)
    if autoscaling is not None and autoscaling.provider == "KEDA" and not monitoring.service_monitor:
        raise SpecError("spec.monitoring.serviceMonitor", "must be true with spec.autoscaling.provider "
                        "KEDA: its Prometheus query selects the series by the labels our "
                        "ServiceMonitor gives them")
    return BEMServiceSpec(
        name=str(name), namespace=str(namespace), uid=str(uid),
        model=_model(spec, str(name)),
        replicas=replicas, autoscaling=autoscaling, resources=resources, gpu=gpu,
        node_selector=str_map(spec, "nodeSelector", "spec.nodeSelector"),
        tolerations=_objects(spec, "tolerations", "spec.tolerations"),
        affinity=opt_map(spec, "affinity", "spec.affinity"),
        rollout=_rollout(spec), disruption_budget=_disruption_budget(spec),
        service=_service(spec), monitoring=monitoring,
        auth=_secret_ref(spec, "auth", "apiKeySecretRef", DEFAULTS["auth.key"]),
        cache=_cache(spec), runtime=_runtime(spec),
    )


def _objects(m: Mapping[str, Any], key: str, path: str) -> tuple[Mapping[str, Any], ...]:
    items = opt_list(m, key, path)
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise SpecError(f"{path}[{i}]", f"must be an object, got {type(item).__name__}")
    return tuple(items)


def _model(spec: Mapping[str, Any], name: str) -> ModelSpec:
    model = opt_map(spec, "model", "spec.model")
    if model is None:
        raise SpecError("spec.model", "is required: say where the base model and BEM checkpoint are")
    source = opt_str(model, "source", "spec.model.source") or DEFAULTS["model.source"]
    claim = opt_str(model, "claimName", "spec.model.claimName")
    if source == "PersistentVolumeClaim" and not claim:
        raise SpecError("spec.model.claimName", "is required when spec.model.source is PersistentVolumeClaim")
    if source == "Image" and claim:
        raise SpecError("spec.model.claimName", "must be unset when spec.model.source is Image")
    if source not in ("PersistentVolumeClaim", "Image"):
        raise SpecError("spec.model.source", "must be PersistentVolumeClaim or Image")
    paths = {}
    for key in ("basePath", "checkpointPath"):
        path = opt_str(model, key, f"spec.model.{key}") or DEFAULTS[f"model.{key}"]
        if path.startswith("/") or ".." in path.split("/"):
            raise SpecError(f"spec.model.{key}", "must be a relative path under /models without '..'")
        paths[key] = path
    base, checkpoint = paths["basePath"], paths["checkpointPath"]
    if base == checkpoint or checkpoint.startswith(base + "/") or base.startswith(checkpoint + "/"):
        raise SpecError("spec.model.checkpointPath",
                        "must not be spec.model.basePath or lie inside it (or contain it)")
    return ModelSpec(
        source=source, claim_name=claim, base_path=paths["basePath"],
        checkpoint_path=paths["checkpointPath"],
        served_name=opt_str(model, "servedName", "spec.model.servedName") or name,
    )


AUTOSCALING_PROVIDERS = ("HPA", "KEDA")


def _autoscaling(spec: Mapping[str, Any]) -> AutoscalingSpec | None:
    auto = opt_map(spec, "autoscaling", "spec.autoscaling")
    if auto is None:
        return None
    p = "spec.autoscaling"
    provider = opt_str(auto, "provider", f"{p}.provider") or DEFAULTS["autoscaling.provider"]
    if provider not in AUTOSCALING_PROVIDERS:
        raise SpecError(f"{p}.provider", f"must be HPA or KEDA, got {provider!r}")
    low = opt_int(auto, "minReplicas", f"{p}.minReplicas", minimum=1) or DEFAULTS["autoscaling.minReplicas"]
    high = opt_int(auto, "maxReplicas", f"{p}.maxReplicas", minimum=1)
    if high is None:
        raise SpecError(f"{p}.maxReplicas", "is required when autoscaling is set")
    if low > high:
        raise SpecError(f"{p}.minReplicas", f"({low}) must be <= spec.autoscaling.maxReplicas ({high})")
    rps = opt_num(auto, "targetRequestsPerSecond", f"{p}.targetRequestsPerSecond")
    if rps is None:
        rps = DEFAULTS["autoscaling.targetRequestsPerSecond"]
    if rps <= 0:
        raise SpecError(f"{p}.targetRequestsPerSecond", "must be greater than 0")
    return AutoscalingSpec(
        provider=provider, min_replicas=low, max_replicas=high, target_requests_per_second=float(rps),
        target_cpu_utilization=opt_int(auto, "targetCPUUtilization", f"{p}.targetCPUUtilization", minimum=1),
        target_memory_utilization=opt_int(
            auto, "targetMemoryUtilization", f"{p}.targetMemoryUtilization", minimum=1),
        behavior=opt_map(auto, "behavior", f"{p}.behavior"),
    )


def _resources(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    res = opt_map(spec, "resources", "spec.resources") or {}
    out: dict[str, dict[str, Any]] = {}
    for part in ("requests", "limits"):
        values = opt_map(res, part, f"spec.resources.{part}")
        if values:
            out[part] = dict(values)
    return out


def _gpu(spec: Mapping[str, Any], resources: Mapping[str, Mapping[str, Any]]) -> GpuSpec:
    gpu = opt_map(spec, "gpu", "spec.gpu") or {}
    count = opt_int(gpu, "count", "spec.gpu.count", minimum=0) or 0
    product = opt_str(gpu, "product", "spec.gpu.product")
    if product and count == 0:
        raise SpecError("spec.gpu.product", "needs spec.gpu.count greater than 0")
    for part in ("requests", "limits"):
        if "nvidia.com/gpu" in resources.get(part, {}):
            raise SpecError(f"spec.resources.{part}", "must not name nvidia.com/gpu: set spec.gpu.count instead")
    return GpuSpec(count=count, product=product or None)


def _check_utilization_requests(auto: AutoscalingSpec | None, resources: Mapping[str, Mapping[str, Any]]) -> None:
    """A Utilization target is a percentage of the request: without one the HPA cannot compute it."""
    if auto is None:
        return
    declared = set(resources.get("requests", {})) | set(resources.get("limits", {}))
    for res, _ in auto.utilization_targets:
        if res not in declared:
            field_name = "targetCPUUtilization" if res == "cpu" else "targetMemoryUtilization"
            raise SpecError(f"spec.autoscaling.{field_name}", f"needs spec.resources.requests.{res}")


def _rollout(spec: Mapping[str, Any]) -> RolloutSpec:
    roll = opt_map(spec, "rollout", "spec.rollout") or {}
    strategy = opt_str(roll, "strategy", "spec.rollout.strategy") or DEFAULTS["rollout.strategy"]
    if strategy not in ("RollingUpdate", "Recreate"):
        raise SpecError("spec.rollout.strategy", "must be RollingUpdate or Recreate")
    surge = opt_int_or_percent(roll, "maxSurge", "spec.rollout.maxSurge")
    unavailable = opt_int_or_percent(roll, "maxUnavailable", "spec.rollout.maxUnavailable")
    if strategy == "Recreate" and (surge is not None or unavailable is not None):
        raise SpecError("spec.rollout", "maxSurge and maxUnavailable apply only to strategy RollingUpdate")
    if surge is not None and unavailable is not None and is_zero(surge) and is_zero(unavailable):
        raise SpecError("spec.rollout", "maxSurge and maxUnavailable cannot both be zero")
    return RolloutSpec(strategy=strategy, max_surge=surge, max_unavailable=unavailable)


def _disruption_budget(spec: Mapping[str, Any]) -> DisruptionBudgetSpec:
    pdb = opt_map(spec, "disruptionBudget", "spec.disruptionBudget") or {}
    p = "spec.disruptionBudget"
    enabled = opt_bool(pdb, "enabled", f"{p}.enabled")
    low = opt_int_or_percent(pdb, "minAvailable", f"{p}.minAvailable")
    high = opt_int_or_percent(pdb, "maxUnavailable", f"{p}.maxUnavailable")
    if low is not None and high is not None:
        raise SpecError(p, "set minAvailable or maxUnavailable, not both")
    if low is None and high is None:
        high = DEFAULTS["disruptionBudget.maxUnavailable"]
    return DisruptionBudgetSpec(
        enabled=DEFAULTS["disruptionBudget.enabled"] if enabled is None else enabled,
        min_available=low, max_unavailable=high,
    )


def _service(spec: Mapping[str, Any]) -> ServiceSpec:
    svc = opt_map(spec, "service", "spec.service") or {}
    kind = opt_str(svc, "type", "spec.service.type") or DEFAULTS["service.type"]
    port = opt_int(svc, "port", "spec.service.port", minimum=1, maximum=65535) or DEFAULTS["service.port"]
    node_port = opt_int(svc, "nodePort", "spec.service.nodePort", minimum=1, maximum=65535)
    if node_port is not None and kind == "ClusterIP":
        raise SpecError("spec.service.nodePort", "needs spec.service.type NodePort or LoadBalancer")
    return ServiceSpec(type=kind, port=port, node_port=node_port)


def _monitoring(spec: Mapping[str, Any]) -> MonitoringSpec:
    mon = opt_map(spec, "monitoring", "spec.monitoring") or {}
    enabled = opt_bool(mon, "serviceMonitor", "spec.monitoring.serviceMonitor")
    return MonitoringSpec(
        service_monitor=DEFAULTS["monitoring.serviceMonitor"] if enabled is None else enabled,
        interval=opt_str(mon, "interval", "spec.monitoring.interval") or DEFAULTS["monitoring.interval"],
    )


def _secret_ref(spec: Mapping[str, Any], parent: str, key: str, default_key: str) -> SecretKeyRef | None:
    section = opt_map(spec, parent, f"spec.{parent}") or {}
    ref = opt_map(section, key, f"spec.{parent}.{key}")
    if ref is None:
        return None
    name = opt_str(ref, "name", f"spec.{parent}.{key}.name")
    if not name:
        raise SpecError(f"spec.{parent}.{key}.name", "is required: the name of a Secret in this namespace")
    return SecretKeyRef(name=name, key=opt_str(ref, "key", f"spec.{parent}.{key}.key") or default_key)


def _cache(spec: Mapping[str, Any]) -> CacheSpec | None:
    cache = opt_map(spec, "cache", "spec.cache")
    if cache is None:
        return None
    ref = _secret_ref(spec, "cache", "redisUrlSecretRef", DEFAULTS["cache.key"])
    if ref is None:
        raise SpecError("spec.cache.redisUrlSecretRef", "is required when spec.cache is set")
    ttl = opt_int(cache, "ttlSeconds", "spec.cache.ttlSeconds", minimum=1) or DEFAULTS["cache.ttlSeconds"]
    return CacheSpec(redis_url=ref, ttl_seconds=ttl)


def _runtime(spec: Mapping[str, Any]) -> RuntimeSpec:
    rt = opt_map(spec, "runtime", "spec.runtime") or {}
    p = "spec.runtime"
    env: Sequence[Mapping[str, Any]] = opt_list(rt, "env", f"{p}.env")
    for i, item in enumerate(env):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise SpecError(f"{p}.env[{i}].name", "is required")
        if item["name"] in RESERVED_ENV:
            raise SpecError(f"{p}.env[{i}].name", f"{item['name']} is set by the operator from spec fields; "
                            "set that field instead")
    args = opt_list(rt, "extraArgs", f"{p}.extraArgs")
    for i, arg in enumerate(args):
        if isinstance(arg, str) and arg.split("=", 1)[0] in OPERATOR_FLAGS:
            raise SpecError(f"{p}.extraArgs[{i}]", f"{arg.split('=', 1)[0]} is set by the operator "
                            "from spec fields; set that field instead")
    secrets = opt_list(rt, "imagePullSecrets", f"{p}.imagePullSecrets")
    return RuntimeSpec(
        image=opt_str(rt, "image", f"{p}.image"),
        image_pull_policy=opt_str(rt, "imagePullPolicy", f"{p}.imagePullPolicy"),
        image_pull_secrets=tuple(str(s) for s in secrets),
        env=tuple(env), extra_args=tuple(str(a) for a in args),
        log_level=opt_str(rt, "logLevel", f"{p}.logLevel") or DEFAULTS["runtime.logLevel"],
        settings=read_runtime_fields(spec),
        startup_timeout_seconds=opt_int(rt, "startupTimeoutSeconds", f"{p}.startupTimeoutSeconds", minimum=10)
        or DEFAULTS["runtime.startupTimeoutSeconds"],
    )

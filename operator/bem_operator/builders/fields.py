"""Small typed readers for spec fields: each names the field path in its error."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Defaults of the CRD (crds/bemservice.yaml); a unit test checks that both agree.
DEFAULTS: dict[str, Any] = {
    "replicas": 1,
    "model.source": "PersistentVolumeClaim",
    "model.basePath": "base",
    "model.checkpointPath": "bem",
    "autoscaling.provider": "HPA",
    "autoscaling.minReplicas": 1,
    "autoscaling.targetRequestsPerSecond": 10,
    "rollout.strategy": "RollingUpdate",
    "disruptionBudget.enabled": True,
    "disruptionBudget.maxUnavailable": 1,
    "service.type": "ClusterIP",
    "service.port": 8080,
    "monitoring.serviceMonitor": True,
    "monitoring.interval": "30s",
    "auth.key": "api-key",
    "cache.key": "redis-url",
    "cache.ttlSeconds": 300,
    "runtime.logLevel": "info",
    "runtime.startupTimeoutSeconds": 600,
}

_PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")


class SpecError(ValueError):
    """A BEMService spec that the schema accepts but that cannot work.

    `field` is the path of the offending field (e.g. `spec.autoscaling.minReplicas`); the message
    names it and says what to fix.
    """

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


def _typed(m: Mapping[str, Any], key: str, path: str, kinds: tuple[type, ...], what: str) -> Any:
    value = m.get(key)
    if value is None:
        return None
    # bool is an int subclass: never accept it where a number is meant.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise SpecError(path, f"must be {what}, got {type(value).__name__}")
    return value


def opt_map(m: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any] | None:
    return _typed(m, key, path, (Mapping,), "an object")


def opt_list(m: Mapping[str, Any], key: str, path: str) -> list[Any]:
    value = _typed(m, key, path, (list, tuple), "a list")
    return list(value) if value is not None else []


def opt_str(m: Mapping[str, Any], key: str, path: str) -> str | None:
    return _typed(m, key, path, (str,), "a string")


def opt_bool(m: Mapping[str, Any], key: str, path: str) -> bool | None:
    return _typed(m, key, path, (bool,), "true or false")


def opt_int(
    m: Mapping[str, Any], key: str, path: str, minimum: int | None = None, maximum: int | None = None
) -> int | None:
    value = _typed(m, key, path, (int,), "an integer")
    if value is None:
        return None
    if minimum is not None and value < minimum:
        raise SpecError(path, f"must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise SpecError(path, f"must be <= {maximum}, got {value}")
    return int(value)


def opt_num(m: Mapping[str, Any], key: str, path: str) -> float | None:
    value = _typed(m, key, path, (int, float), "a number")
    return None if value is None else value


def opt_int_or_percent(m: Mapping[str, Any], key: str, path: str) -> int | str | None:
    value = _typed(m, key, path, (int, str), "an integer or a percentage such as '25%'")
    if isinstance(value, str) and not _PERCENT.match(value):
        raise SpecError(path, f"must be an integer or a percentage such as '25%', got {value!r}")
    if isinstance(value, int) and value < 0:
        raise SpecError(path, f"must be >= 0, got {value}")
    return value


def str_map(m: Mapping[str, Any], key: str, path: str) -> dict[str, str]:
    value = opt_map(m, key, path) or {}
    for k, v in value.items():
        if not isinstance(v, str):
            raise SpecError(f"{path}.{k}", "must be a string")
    return dict(value)


def is_zero(value: int | str) -> bool:
    return value == 0 or value == "0%"

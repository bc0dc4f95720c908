"""Operator settings, read once from the environment.

Every value has a default that works in a cluster; a bad value fails at start
with a message naming the variable and what it accepts.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from bem_operator.builders.options import OperatorPods
from bem_operator.builders.spec_types import LABEL_KEY, LABEL_VALUE
from bem_operator.constants import DEFAULT_PROMETHEUS_ADDRESS, DEFAULT_RUNTIME_IMAGE

__all__ = ["DEFAULT_PROMETHEUS_ADDRESS", "DEFAULT_RUNTIME_IMAGE", "OperatorSettings", "SettingsError"]
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_URL_RE = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()  # empty: every namespace (cluster-wide)
    metrics_port: int = 8000
    health_port: int = 8080
    bind_address: str = "0.0.0.0"  # probes and scrapes come from other hosts
    resync_seconds: float = 30.0
    runtime_image: str = DEFAULT_RUNTIME_IMAGE
    # Queried by KEDA (not by the operator) for BEMServices with autoscaling provider KEDA.
    prometheus_address: str = DEFAULT_PROMETHEUS_ADDRESS
    # Coalesces bursts of child events into one reconcile of the parent.
    child_event_delay_seconds: float = 0.1
    # Reconciles run at once (each in a thread: its requests block): 8 keep a burst of
    # 1000 new BEMServices within 1.2x of a direct apply of the same objects (bench_operator).
    workers: int = 8
    # How often the cache is checked against a list of names (and after every outage).
    relist_seconds: float = 600.0
    # Watch timeouts keep streams from hanging silently on dead connections.
    watch_server_timeout: int = 270
    watch_client_timeout: int = 300
    connect_timeout: int = 10
    request_timeout: int = 30
    log_level: str = "INFO"
    # The operator's own pods (POD_NAMESPACE from the downward API, BEM_OPERATOR_POD_LABELS):
    # the runtime pods' NetworkPolicy admits the admin port from them alone.
    operator_pods: OperatorPods = OperatorPods()

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorSettings:
        return cls(
            namespaces=_namespaces(env.get("BEM_OPERATOR_NAMESPACES", "")),
            metrics_port=_port(env, "BEM_OPERATOR_METRICS_PORT", cls.metrics_port),
            health_port=_port(env, "BEM_OPERATOR_HEALTH_PORT", cls.health_port),
            bind_address=env.get("BEM_OPERATOR_BIND_ADDRESS", cls.bind_address).strip()
            or cls.bind_address,
            resync_seconds=_positive(env, "BEM_OPERATOR_RESYNC_SECONDS", cls.resync_seconds),
            runtime_image=_image(env.get("BEM_RUNTIME_IMAGE", "")),
            prometheus_address=_url(env, "BEM_OPERATOR_PROMETHEUS_ADDRESS", cls.prometheus_address),
            log_level=_log_level(env.get("BEM_OPERATOR_LOG_LEVEL", cls.log_level)),
            operator_pods=_operator_pods(env),
        )


def _namespaces(raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    bad = [name for name in names if not _NAMESPACE_RE.match(name)]
    if bad:
        raise SettingsError(
            f"BEM_OPERATOR_NAMESPACES holds invalid namespace names {bad}: give a comma-separated "
            "list of DNS-1123 labels (lower case letters, digits, '-'), or leave it empty to "
            "watch every namespace"
        )
    return names


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise SettingsError(f"{name}={raw!r} is not a TCP port: give a number from 1 to 65535")
    return int(raw)


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} is not a positive number of seconds")
    return value


def _image(raw: str) -> str:
    image = raw.strip()
    if not image:
        return DEFAULT_RUNTIME_IMAGE
    if any(ch.isspace() for ch in image):
        raise SettingsError(f"BEM_RUNTIME_IMAGE={raw!r} contains white space: give an image reference")
    return image


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not _URL_RE.match(raw):
        raise SettingsError(f"{name}={raw!r} is not an http(s) URL: give one such as {default}")
    return raw.rstrip("/")


def _log_level(raw: str) -> str:
    level = raw.strip().upper() or "INFO"
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(
            f"BEM_OPERATOR_LOG_LEVEL={raw!r} is not one of debug, info, warning, error"
        )
    return level


def _operator_pods(env: Mapping[str, str]) -> OperatorPods:
    namespace = env.get("POD_NAMESPACE", "").strip() or None
    if namespace is not None and not _NAMESPACE_RE.match(namespace):
        raise SettingsError(f"POD_NAMESPACE={namespace!r} is not a namespace name")
    raw = env.get("BEM_OPERATOR_POD_LABELS", "").strip()
    if not raw:
        return OperatorPods(namespace)
    labels = []
    for part in raw.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not re.match(LABEL_KEY, key.strip()) \
                or len(value.strip()) > 63 or not re.match(LABEL_VALUE, value.strip()):
            raise SettingsError(
                f"BEM_OPERATOR_POD_LABELS={raw!r} is not a list of labels: give key=value pairs "
                "separated by commas, the labels that select the operator's pods, e.g. "
                "app.kubernetes.io/name=bem-operator,app.kubernetes.io/instance=bem")
        labels.append((key.strip(), value.strip()))
    return OperatorPods(namespace, tuple(sorted(dict(labels).items())))

"""The runtime pod template: container contract of docs/architecture.md, GPU scheduling, probes."""

from __future__ import annotations

import copy
import math
from typing import Any

from bem_operator.builders.checkpoints import (ADMIN_TOKEN_DIR, ADMIN_TOKEN_KEY, START_LIST_DIR,
                                               START_LIST_KEY, admin_secret_name, start_list_name)
from bem_operator.builders.labels import child_labels
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.runtime_fields import read_runtime_fields
from bem_operator.builders.spec_types import BEMServiceSpec
from bem_operator.constants import CONFIG_HASH_ANNOTATION

CONTAINER_NAME = "bem-runtime"
# The runtime's ports, apart so that the NetworkPolicy (network_policy.py) can admit each kind
# of client to its own: name -> (number, the runtime setting that opens it).
HTTP_PORT = 8080  # the API and the probes
METRICS_PORT = 9090  # /metrics only
ADMIN_PORT = 8081  # the admin API (/v1/checkpoints) only, called by the operator
RUNTIME_PORTS: dict[str, tuple[int, str]] = {
    "http": (HTTP_PORT, "BEM_PORT"),
    "metrics": (METRICS_PORT, "BEM_METRICS_PORT"),
    "admin": (ADMIN_PORT, "BEM_ADMIN_PORT"),
}
RUNTIME_UID = 10001
MODELS_DIR = "/models"
API_KEYS_DIR = "/var/run/secrets/bem/api-keys"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
STARTUP_PERIOD_SECONDS = 5
PRESTOP_SLEEP_SECONDS = 5
# The runtime drains for at most BEM_DRAIN_TIMEOUT (its default, or the user's env) after SIGTERM, then cancels what is left and
# exits within a second; the margin covers that second plus process teardown, so the kubelet's
# SIGKILL never lands mid-drain.
DRAIN_TIMEOUT_SECONDS = 30
DRAIN_MARGIN_SECONDS = 5


def build_pod_template(spec: BEMServiceSpec, options: BuildOptions, config_hash: str) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the runtime never talks to the API server
        "enableServiceLinks": False,  # a Service named "bem" would inject BEM_PORT=tcp://...
        "terminationGracePeriodSeconds": termination_grace_seconds(drain_timeout_seconds(spec)),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "fsGroup": RUNTIME_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec, options)],
        "volumes": _volumes(spec),
    }
    pod.update(_scheduling(spec))
    if spec.runtime.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in spec.runtime.image_pull_secrets]
    return {
        "metadata": {
            "labels": child_labels(spec.name),
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
        },
        "spec": pod,
    }


def drain_timeout_seconds(spec: BEMServiceSpec) -> float:
    """The drain the runtime will get: --drain-timeout in extraArgs (a flag wins, as in the
    runtime), else the user's BEM_DRAIN_TIMEOUT, else the runtime's default."""
    args = [str(a) for a in spec.runtime.extra_args]
    for i, arg in enumerate(args):
        if arg == "--drain-timeout" and i + 1 < len(args):
            return _positive(args[i + 1])
        if arg.startswith("--drain-timeout="):
            return _positive(arg.split("=", 1)[1])
    for item in spec.runtime.env:
        if item.get("name") == "BEM_DRAIN_TIMEOUT" and "value" in item:
            return _positive(item["value"])
    return DRAIN_TIMEOUT_SECONDS


def _positive(raw: Any) -> float:
    """A usable drain timeout, else our default (the runtime refuses a bad one at start)."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return DRAIN_TIMEOUT_SECONDS
    return value if math.isfinite(value) and value > 0 else DRAIN_TIMEOUT_SECONDS


def termination_grace_seconds(drain_timeout: float) -> int:
    """The preStop pause runs first and counts in the grace period, then the drain, then a margin."""
    return PRESTOP_SLEEP_SECONDS + math.ceil(drain_timeout) + DRAIN_MARGIN_SECONDS


def _container(spec: BEMServiceSpec, options: BuildOptions) -> dict[str, Any]:
    rt = spec.runtime
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": rt.image or options.default_runtime_image,
        "command": ["bem-runtime", "serve"],
        "env": runtime_env(spec),
        "ports": [{"name": name, "containerPort": number, "protocol": "TCP"}
                  for name, (number, _env) in RUNTIME_PORTS.items()],
        "resources": _resources(spec),
        "volumeMounts": _volume_mounts(spec),
        # A model that fails to load: the runtime writes why to /dev/termination-log and exits
        # with code 3; without that file the log tail stands in. The operator puts the message
        # into the BEMService's Degraded condition (status.pod_findings).
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_UID,
            "runAsGroup": RUNTIME_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    container.update(_probes(spec))
    # Deleting a pod removes it from the Service's endpoints while the kubelet sends
    # SIGTERM: kube-proxy on every node needs a moment to stop sending new connections.
    # The pod keeps serving through this pause, then drains (counted in the grace period).
    container["lifecycle"] = {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}}
    if rt.extra_args:
        container["args"] = list(rt.extra_args)
    if rt.image_pull_policy:
        container["imagePullPolicy"] = rt.image_pull_policy
    return container


def _probes(spec: BEMServiceSpec) -> dict[str, Any]:
    def http_get(path: str) -> dict[str, Any]:
        return {"path": path, "port": "http", "scheme": "HTTP"}

    # The startup probe waits on /ready: liveness stays off while the model loads and warms up,
    # however long that takes (bounded by spec.runtime.startupTimeoutSeconds).
    attempts = math.ceil(spec.runtime.startup_timeout_seconds / STARTUP_PERIOD_SECONDS)
    return {
        "startupProbe": {
            "httpGet": http_get("/ready"), "periodSeconds": STARTUP_PERIOD_SECONDS,
            "timeoutSeconds": 3, "failureThreshold": attempts, "successThreshold": 1,
        },
        "readinessProbe": {
            "httpGet": http_get("/ready"), "periodSeconds": 5,
            "timeoutSeconds": 3, "failureThreshold": 2, "successThreshold": 1,
        },
        "livenessProbe": {
            "httpGet": http_get("/health"), "periodSeconds": 10,
            "timeoutSeconds": 5, "failureThreshold": 3, "successThreshold": 1,
        },
    }


def _fmt(value: int | float | list[str]) -> str:
    if isinstance(value, list):
        return ",".join(value)
    return repr(value) if isinstance(value, float) else str(value)


def runtime_env(spec: BEMServiceSpec) -> list[dict[str, Any]]:
    """Runtime settings as BEM_* env vars (architecture.md), then the user's own variables."""
    values: list[tuple[str, str]] = [
        ("BEM_HOST", "0.0.0.0"),
        *((env, str(number)) for number, env in RUNTIME_PORTS.values()),
        ("BEM_MODEL_DIR", f"{MODELS_DIR}/{spec.model.base_path}"),
        ("BEM_CHECKPOINT_DIR", f"{MODELS_DIR}/{spec.model.checkpoint_path}"),
        ("BEM_MODEL_NAME", spec.served_name),
        ("BEM_DEVICE", "cuda" if spec.gpu.count > 0 else "cpu"),
        ("BEM_LOG_LEVEL", spec.runtime.log_level),
        # BEMCheckpoints: loaded at start from the start list, later through the admin API;
        # their paths are relative to /models.
        ("BEM_CHECKPOINT_ROOT", MODELS_DIR),
        ("BEM_CHECKPOINTS_FILE", f"{START_LIST_DIR}/{START_LIST_KEY}"),
        ("BEM_ADMIN_TOKEN_FILE", f"{ADMIN_TOKEN_DIR}/{ADMIN_TOKEN_KEY}"),
    ]
    values += [(env, _fmt(v)) for env, v in read_runtime_fields(spec).items()]
    if spec.api_keys is not None:
        values.append(("BEM_API_KEY_FILE", f"{API_KEYS_DIR}/{spec.api_keys.key}"))
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values]
    if spec.cache is not None:
        ref = spec.cache.redis_url_secret_ref
        env.append({"name": "BEM_REDIS_URL",
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
        env.append({"name": "BEM_CACHE_TTL", "value": str(spec.cache.ttl_seconds)})
    # Never a download at run time; caches go to the writable /tmp.
    env += [{"name": "HF_HUB_OFFLINE", "value": "1"}, {"name": "HF_HOME", "value": "/tmp/huggingface"}]
    # User variables come last; one of the same name replaces ours (server-side apply keys the
    # list by name and refuses duplicates).
    index = {item["name"]: i for i, item in enumerate(env)}
    for item in spec.runtime.env:
        if item["name"] in index:
            env[index[item["name"]]] = copy.deepcopy(dict(item))
        else:
            index[item["name"]] = len(env)
            env.append(copy.deepcopy(dict(item)))
    return env


def _resources(spec: BEMServiceSpec) -> dict[str, Any]:
    out: dict[str, Any] = {part: dict(sorted(values.items())) for part, values in spec.resources.items()}
    if spec.gpu.count > 0:
        # Extended resources: the request must equal the limit.
        for part in ("limits", "requests"):
            out.setdefault(part, {})[GPU_RESOURCE] = str(spec.gpu.count)
            out[part] = dict(sorted(out[part].items()))
    return dict(sorted(out.items()))


def _volumes(spec: BEMServiceSpec) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "checkpoints", "configMap": {"name": start_list_name(spec.name)}},
        {"name": "admin-token", "secret": {"secretName": admin_secret_name(spec.name),
                                           "defaultMode": 0o440}},
    ]
    if spec.model.source == "PersistentVolumeClaim":
        volumes.append({"name": "models", "persistentVolumeClaim": {
            "claimName": spec.model.claim_name, "readOnly": True}})
    if spec.api_keys is not None:
        volumes.append({"name": "api-keys", "secret": {
            "secretName": spec.api_keys.name,
            "items": [{"key": spec.api_keys.key, "path": spec.api_keys.key}],
            "defaultMode": 0o440,
        }})
    return volumes


def _volume_mounts(spec: BEMServiceSpec) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "checkpoints", "mountPath": START_LIST_DIR, "readOnly": True},
        {"name": "admin-token", "mountPath": ADMIN_TOKEN_DIR, "readOnly": True},
    ]
    if spec.model.source == "PersistentVolumeClaim":
        mounts.append({"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
    if spec.api_keys is not None:
        mounts.append({"name": "api-keys", "mountPath": API_KEYS_DIR, "readOnly": True})
    return mounts


def _scheduling(spec: BEMServiceSpec) -> dict[str, Any]:
    """GPU placement merged with the user's: the user's nodeSelector wins on a key conflict."""
    out: dict[str, Any] = {}
    selector: dict[str, str] = {}
    if spec.gpu.product:
        selector[GPU_PRODUCT_LABEL] = spec.gpu.product
    selector.update(spec.node_selector)
    if selector:
        out["nodeSelector"] = dict(sorted(selector.items()))
    tolerations = [copy.deepcopy(dict(t)) for t in spec.tolerations]
    if spec.gpu.count > 0 and not any(_covers(t, GPU_TOLERATION) for t in tolerations):
        tolerations.append(dict(GPU_TOLERATION))
    if tolerations:
        out["tolerations"] = tolerations
    if spec.affinity:
        out["affinity"] = copy.deepcopy(dict(spec.affinity))
    return out


def _covers(user: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """True when the user's toleration already tolerates the taint `wanted` tolerates."""
    if user.get("operator", "Equal") == "Exists" and not user.get("key"):
        return not user.get("effect") or user.get("effect") == wanted["effect"]
    if user.get("key") != wanted["key"]:
        return False
    if user.get("effect") and user.get("effect") != wanted["effect"]:
        return False
    return user.get("operator") == "Exists" and "tolerationSeconds" not in user

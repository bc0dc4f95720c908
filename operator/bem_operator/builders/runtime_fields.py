"""Spec fields the operator hands to the runtime as they are, each declared once.

A row names the field (its path under `spec`), the runtime setting it becomes (the env var the
operator sets and the flag it stands for, as bem_runtime/settings.py declares them) and how the
value is read. The parse (`read_runtime_fields`, called by spec.py), the pod's env (pod.py) and
the names a user may not set in spec.runtime.env or extraArgs (RESERVED_ENV, OPERATOR_FLAGS)
derive from the table.

The operator does not import the runtime (import-linter keeps the two packages independent: a
pod may run another runtime release), so tests check each row against the runtime's settings
table (tests/operator/test_runtime_env_contract.py) and against the CRD's field and its lists of
refused names (tests/operator/test_builders_crd_schema.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bem_operator.builders.fields import opt_int, opt_map, opt_num


@dataclass(frozen=True)
class RuntimeField:
    path: str  # under spec, e.g. "runtime.maxQueue"
    env: str  # what the operator sets in the pod
    flag: str  # the same setting as a flag of `bem-runtime serve` (refused in extraArgs)
    kind: type[int] | type[float]  # int: an integer of at least `minimum`; float: any number
    minimum: int | None = None

    @property
    def section(self) -> tuple[str, ...]:
        return tuple(self.path.split(".")[:-1])

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[-1]


# Unset fields are left out of the pod: the runtime (or the checkpoint) default applies. The
# pod's env lists them in this order.
RUNTIME_FIELDS: tuple[RuntimeField, ...] = (
    RuntimeField("model.routing.topK", "BEM_TOP_K", "--top-k", int, minimum=1),
    RuntimeField("model.routing.chunkSize", "BEM_CHUNK_SIZE", "--chunk-size", int, minimum=1),
    RuntimeField("model.routing.hysteresis", "BEM_HYSTERESIS", "--hysteresis", float),
    RuntimeField("model.routing.temperature", "BEM_ROUTER_TEMPERATURE", "--temperature", float),
    RuntimeField("model.governance.sigmaMax", "BEM_SIGMA_MAX", "--sigma-max", float),
    RuntimeField("model.governance.trustRegion", "BEM_TRUST_REGION", "--trust-region", float),
    RuntimeField("model.governance.minConfidence", "BEM_MIN_CONFIDENCE", "--min-confidence", float),
    RuntimeField("runtime.maxBatchSize", "BEM_MAX_BATCH_SIZE", "--max-batch-size", int, minimum=1),
    RuntimeField("runtime.maxQueue", "BEM_MAX_QUEUE", "--max-queue", int, minimum=1),
)

# Env vars the operator sets from spec fields: a user env var of the same name is refused (also
# by the CRD), so each setting has one place. Besides the table's: the ones pod.py works out from
# other facts (paths under /models, the GPU, the log level, the Secrets; BEM_API_KEYS because
# keys come from a Secret).
RESERVED_ENV: frozenset[str] = frozenset({
    "BEM_HOST", "BEM_PORT", "BEM_MODEL_DIR", "BEM_CHECKPOINT_DIR", "BEM_MODEL_NAME", "BEM_DEVICE",
    "BEM_LOG_LEVEL", "BEM_API_KEY_FILE", "BEM_API_KEYS", "BEM_REDIS_URL", "BEM_CACHE_TTL",
    *(f.env for f in RUNTIME_FIELDS),
})

# Flags of `bem-runtime serve` that those env vars stand for: an extra argument may not override
# them (also refused by the CRD).
OPERATOR_FLAGS: frozenset[str] = frozenset({
    "--model-dir", "--bem-dir", "--model-name", "--host", "--port", "--api-key-file",
    "--redis-url", "--cache-ttl", "--device", "--log-level",
    *(f.flag for f in RUNTIME_FIELDS),
})


def read_runtime_fields(spec: Mapping[str, Any]) -> dict[str, int | float]:
    """The table's fields that are set in `spec`, as env var -> value, in table order; each
    value checked with its field path in the error."""
    values: dict[str, int | float] = {}
    for field in RUNTIME_FIELDS:
        section, path = spec, "spec"
        for part in field.section:
            path = f"{path}.{part}"
            section = opt_map(section, part, path) or {}
        path = f"{path}.{field.key}"
        if field.kind is int:
            value = opt_int(section, field.key, path, minimum=field.minimum)
        else:
            value = opt_num(section, field.key, path)
        if value is not None:
            values[field.env] = value
    return values

"""Spec fields the operator hands to the runtime as they are, derived from the typed spec.

A field of spec_types.py marked `RuntimeEnv("BEM_...")` becomes one row: its path under `spec`,
the env var the operator sets, and the flag the runtime reads for that env var. The flag comes
from runtime_contract.py, which scripts/gen_crds.py writes from the runtime's own settings table
(the operator does not import the runtime: a pod may run another runtime release, and
import-linter keeps the packages apart). The pod's env (pod.py) and the names a user may not set
in spec.runtime.env or extraArgs (RESERVED_ENV, OPERATOR_FLAGS; the CRD's CEL lists) derive
from here.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass

from annotated_types import Ge

from bem_operator.builders.runtime_contract import RUNTIME_FLAGS
from bem_operator.builders.spec_schema import RuntimeEnv, Section, get_path, walk_fields
from bem_operator.builders.spec_types import Spec


@dataclass(frozen=True)
class RuntimeField:
    path: str  # under spec, e.g. "runtime.maxQueue"
    env: str  # what the operator sets in the pod
    flag: str  # the same setting as a flag of `bem-runtime serve` (refused in extraArgs)
    # The spec field's type, which the runtime parses the same way (a list: comma-separated).
    kind: type[int] | type[float] | type[list]
    minimum: int | None = None

    @property
    def section(self) -> tuple[str, ...]:
        return tuple(self.path.split(".")[:-1])

    @property
    def key(self) -> str:
        return self.path.rsplit(".", 1)[-1]


def _rows() -> tuple[RuntimeField, ...]:
    rows = []
    for path, info in walk_fields(Spec):
        marker = next((m for m in info.metadata if isinstance(m, RuntimeEnv)), None)
        if marker is None:
            continue
        types = [typing.get_origin(t) or t
                 for t in getattr(info.annotation, "__args__", (info.annotation,))]
        kind = next(t for t in (int, float, list) if t in types)
        minimum = next((m.ge for m in info.metadata if isinstance(m, Ge)), None)
        rows.append(RuntimeField(path, marker.env, RUNTIME_FLAGS[marker.env], kind, minimum))
    return tuple(rows)


# Unset fields are left out of the pod: the runtime (or the checkpoint) default applies. The
# pod's env lists them in this order (the spec's declaration order).
RUNTIME_FIELDS: tuple[RuntimeField, ...] = _rows()

# Env vars the operator sets from spec fields: a user env var of the same name is refused (by
# the CRD), so each setting has one place. Besides the table's: the ones pod.py works out from
# other facts (the ports, paths under /models, the GPU, the log level, the Secrets, the BEMCheckpoints'
# start list and admin token; BEM_API_KEYS because keys come from a Secret).
RESERVED_ENV: frozenset[str] = frozenset({
    "BEM_HOST", "BEM_PORT", "BEM_METRICS_PORT", "BEM_ADMIN_PORT", "BEM_MODEL_DIR", "BEM_CHECKPOINT_DIR", "BEM_MODEL_NAME", "BEM_DEVICE",
    "BEM_LOG_LEVEL", "BEM_API_KEY_FILE", "BEM_API_KEYS", "BEM_REDIS_URL", "BEM_CACHE_TTL",
    "BEM_CHECKPOINT_ROOT", "BEM_CHECKPOINTS_FILE", "BEM_ADMIN_TOKEN_FILE",
    *(f.env for f in RUNTIME_FIELDS),
})

# Flags of `bem-runtime serve` that those env vars stand for (the runtime's table says which):
# an extra argument may not override them.
OPERATOR_FLAGS: frozenset[str] = frozenset(flag for env in RESERVED_ENV if (flag := RUNTIME_FLAGS[env]))


def read_runtime_fields(spec: Section) -> dict[str, int | float | list[str]]:
    """The table's fields that are set in `spec`, as env var -> value, in table order."""
    values = {field.env: get_path(spec, field.path) for field in RUNTIME_FIELDS}
    return {env: value for env, value in values.items() if value is not None}

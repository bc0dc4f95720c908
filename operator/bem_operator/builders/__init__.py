"""Pure builders: a BEMService object in, the desired child objects out.

No I/O and no API client here (an import-linter contract in pyproject.toml keeps it so). Every
function is deterministic: the same input gives equal output, with no timestamps, so applying the
result again is a no-op. Which children exist is the registry's (kinds.py); each builder takes the
spec parsed once (parse_bemservice) and the BuildOptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bem_operator.builders.autoscaling import REQUEST_RATE_METRIC
from bem_operator.builders.deployment import config_hash
from bem_operator.builders.kinds import CHILD_REGISTRY, children_from_spec
from bem_operator.builders.labels import child_labels, owner_reference, selector_labels, selector_string
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.runtime_fields import RESERVED_ENV
from bem_operator.builders.service import endpoint
from bem_operator.builders.spec import DEFAULTS, SpecError, parse_bemservice
from bem_operator.builders.spec_types import BEMServiceSpec

__all__ = [
    "CHILD_KINDS", "DEFAULTS", "REQUEST_RATE_METRIC", "RESERVED_ENV", "BEMServiceSpec",
    "BuildOptions", "SpecError", "build_children", "child_labels", "children_from_spec",
    "config_hash", "endpoint", "owner_reference", "parse_bemservice", "selector_labels",
    "selector_string",
]

# Every kind the operator may create, in apply order, as (apiVersion, kind): the API layer
# deletes owned children of these kinds that the builders no longer return.
CHILD_KINDS: tuple[tuple[str, str], ...] = tuple(child.key for child in CHILD_REGISTRY)

_DEFAULT_OPTIONS = BuildOptions()


def build_children(bems: Mapping[str, Any], options: BuildOptions = _DEFAULT_OPTIONS) -> list[dict[str, Any]]:
    """All desired children of one BEMService object, in apply order.

    Deployment, Service, then the HPA (only with spec.autoscaling), the PDB (when enabled) and
    the ServiceMonitor (when enabled and its CRD is available). Raises SpecError for a spec
    that cannot work. A caller that already holds the parsed spec uses children_from_spec.
    """
    return children_from_spec(parse_bemservice(bems), options)

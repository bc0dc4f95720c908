"""What every runtime pod of a BEMService needs for its BEMCheckpoints, in place before the
first one exists (so applying or deleting a BEMCheckpoint never changes the pod template): the
start list it reads at start (a ConfigMap, mounted as the runtime's --checkpoints-file) and the
admin token of the runtime's checkpoint API (a Secret the operator creates once per service,
mounted read-only: the token is random, so no builder makes it)."""

from __future__ import annotations

import json
from typing import Any

from bem_operator.builders.labels import child_metadata
from bem_operator.builders.options import BuildOptions
from bem_operator.builders.spec_types import BEMServiceSpec

START_LIST_KEY = "checkpoints.json"
START_LIST_DIR = "/etc/bem/checkpoints"
ADMIN_TOKEN_KEY = "token"
ADMIN_TOKEN_DIR = "/var/run/secrets/bem/admin"


def start_list_name(service: str) -> str:
    return f"{service}-checkpoints"


def admin_secret_name(service: str) -> str:
    return f"{service}-admin-token"


def start_list_from_spec(spec: BEMServiceSpec, options: BuildOptions) -> dict[str, Any]:
    """The ConfigMap of the runtime's --checkpoints-file: {"<name>": "<path under /models>"} of
    the BEMCheckpoints placed on this service's pods (options.checkpoints). A pod reads it when
    its runtime starts, so one started by a scale-up or a restart holds them before it is Ready."""
    start_list = dict(sorted(options.checkpoints))
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": child_metadata(spec, start_list_name(spec.name)),
        "data": {START_LIST_KEY: json.dumps(start_list, indent=1, sort_keys=True) + "\n"},
    }

"""The container contract from both sides: every BEM_* variable and serve flag the operator's
builders can put into a pod is one the runtime accepts (its settings table, bem_runtime.settings).
Only the runtime's settings module is imported here: it needs no torch or aiohttp."""

from __future__ import annotations

import re
from pathlib import Path

from builders_factory import by_kind, container, with_spec

from bem_operator.builders import RESERVED_ENV, build_children
from bem_operator.builders import pod as pod_builder
from bem_operator.builders.fields import OPERATOR_FLAGS
from bem_runtime.settings import ACCEPTED_ENV, ALL_SETTINGS

RUNTIME_FLAGS = {s.flag for s in ALL_SETTINGS if s.flag is not None}


def _everything_on() -> dict:
    """A BEMService with every feature that adds runtime env switched on."""
    return with_spec(
        model={"claimName": "m",
               "routing": {key: 1 for key in pod_builder._ROUTING_ENV},
               "governance": {key: 0.5 for key in pod_builder._GOVERNANCE_ENV}},
        runtime={"logLevel": "debug", "maxBatchSize": 4, "maxQueue": 8,
                 "env": [{"name": "BEM_DRAIN_TIMEOUT", "value": "10"}],
                 "extraArgs": ["--drain-timeout", "12"]},
        auth={"apiKeySecretRef": {"name": "keys"}},
        cache={"redisUrlSecretRef": {"name": "redis"}, "ttlSeconds": 60},
        gpu={"count": 1},
        autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetRequestsPerSecond": 5},
    )


def test_every_bem_env_var_the_pod_builder_emits_is_a_runtime_setting():
    children = by_kind(build_children(_everything_on()))
    env = [item["name"] for item in container(children["Deployment"])["env"]]
    emitted = {name for name in env if name.startswith("BEM_")}
    # Every feature is on: each routing and governance override, auth and the cache are there.
    assert set(pod_builder._ROUTING_ENV.values()) | set(pod_builder._GOVERNANCE_ENV.values()) <= emitted
    assert {"BEM_API_KEY_FILE", "BEM_REDIS_URL", "BEM_CACHE_TTL", "BEM_DRAIN_TIMEOUT"} <= emitted
    assert emitted - ACCEPTED_ENV == set()


def test_every_flag_in_the_pod_command_is_a_runtime_flag():
    c = container(by_kind(build_children(_everything_on()))["Deployment"])
    flags = {arg.split("=", 1)[0] for arg in [*c.get("command", []), *c.get("args", [])]
             if arg.startswith("--")}
    assert flags - RUNTIME_FLAGS == set()


def test_reserved_names_and_flags_are_runtime_settings():
    assert RESERVED_ENV - ACCEPTED_ENV == set()
    assert OPERATOR_FLAGS - RUNTIME_FLAGS == set()


def test_every_bem_name_in_the_builders_source_is_a_runtime_setting():
    """Catches a variable the builders read or write outside the paths built above."""
    builders = Path(pod_builder.__file__).parent
    names = {m for f in builders.glob("*.py")
             for m in re.findall(r"\bBEM_[A-Z0-9_]+\b", f.read_text(encoding="utf-8"))}
    assert names, "the scan found nothing: the builders moved?"
    assert names - ACCEPTED_ENV == set()

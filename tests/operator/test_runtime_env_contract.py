"""The container contract from both sides: every BEM_* variable and serve flag the operator's
builders can put into a pod is one the runtime accepts (its settings table, bem_runtime.settings).
Only the runtime's settings module is imported here: it needs no torch or aiohttp."""

from __future__ import annotations

import re
from pathlib import Path

from builders_factory import by_kind, container, with_every_runtime_field, with_spec

from bem_operator.builders import RESERVED_ENV, build_children
from bem_operator.builders import pod as pod_builder
from bem_operator.builders.runtime_fields import OPERATOR_FLAGS, RUNTIME_FIELDS
from bem_runtime.settings import ACCEPTED_ENV, ALL_SETTINGS

RUNTIME_FLAGS = {s.flag for s in ALL_SETTINGS if s.flag is not None}


def _everything_on() -> dict:
    """A BEMService with every feature that adds runtime env switched on."""
    return with_every_runtime_field(with_spec(
        model={"claimName": "m"},
        runtime={"logLevel": "debug",
                 "env": [{"name": "BEM_DRAIN_TIMEOUT", "value": "10"}],
                 "extraArgs": ["--drain-timeout", "12"]},
        auth={"apiKeySecretRef": {"name": "keys"}},
        cache={"redisUrlSecretRef": {"name": "redis"}, "ttlSeconds": 60},
        gpu={"count": 1},
        autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetRequestsPerSecond": 5},
    ))


def test_every_bem_env_var_the_pod_builder_emits_is_a_runtime_setting():
    children = by_kind(build_children(_everything_on()))
    env = [item["name"] for item in container(children["Deployment"])["env"]]
    emitted = {name for name in env if name.startswith("BEM_")}
    # Every feature is on: each field of the runtime-fields table, auth and the cache are there.
    assert {field.env for field in RUNTIME_FIELDS} <= emitted
    assert {"BEM_API_KEY_FILE", "BEM_REDIS_URL", "BEM_CACHE_TTL", "BEM_DRAIN_TIMEOUT"} <= emitted
    assert emitted - ACCEPTED_ENV == set()


def test_each_runtime_field_names_one_runtime_setting_by_its_env_var_and_flag():
    by_env = {s.env: s for s in ALL_SETTINGS}
    for field in RUNTIME_FIELDS:
        assert field.env in by_env, f"spec.{field.path}: the runtime does not read {field.env}"
        assert field.flag == by_env[field.env].flag, (
            f"spec.{field.path}: {field.env} is the runtime's {by_env[field.env].flag}, not {field.flag}")
        # What the operator accepts is what the runtime parses (an int field gets no "0.5"; a
        # list is handed over comma-separated and read back as one).
        parse = by_env[field.env].parse
        if field.kind is list:
            assert isinstance(parse("10.0.0.0/8,10.1.0.0/16"), tuple), f"spec.{field.path}: {parse}"
        else:
            assert field.kind is parse, f"spec.{field.path}: {parse}"


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

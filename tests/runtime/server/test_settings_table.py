"""The runtime settings table (bem_runtime.settings.SETTINGS) is the one declaration of each
setting: the CLI, the env reading, the cache key and the docs table agree with it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from bem_runtime.cli import build_parser, settings_from_args
from bem_runtime.inference import _cache_key
from bem_runtime.settings import ALL_SETTINGS, SETTINGS, Settings, cache_identity, setting

ARCHITECTURE = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"
# A value per parser that differs from every default, as the env would carry it.
SAMPLE = {int: ("7", 7), float: ("0.25", 0.25), str: ("debug", "debug"),
          Path: ("/x/y", Path("/x/y"))}
CHOICE = {"device": ("cpu", "cpu"), "batching": ("static", "static")}


def _sample(s):
    return CHOICE.get(s.name) or SAMPLE[s.parse]


def _docs_rows() -> list[tuple[list[str], list[str]]]:
    """(flags, env vars) of each row of the runtime flag table in docs/architecture.md."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    start = text.index("| flag | env | meaning |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.strip().startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append((re.findall(r"`(--[a-z0-9-]+)`", cells[0]),
                     re.findall(r"`(BEM_[A-Z0-9_]+)`", cells[1])))
    return rows


def test_docs_table_lists_every_setting_with_its_flag():
    by_env = {s.env: s for s in ALL_SETTINGS}
    documented = {}
    for flags, envs in _docs_rows():
        assert flags == [] or len(flags) == len(envs), (flags, envs)
        for i, env in enumerate(envs):
            assert env in by_env, f"docs/architecture.md lists {env}, which the runtime does not read"
            documented[env] = flags[i] if flags else None
    assert set(documented) == set(by_env), \
        f"missing from docs/architecture.md: {sorted(set(by_env) - set(documented))}"
    for env, flag in documented.items():
        assert flag == by_env[env].flag, f"{env}: docs say {flag}, the runtime has {by_env[env].flag}"


def test_every_setting_is_unique_and_has_a_help_text():
    for attr in ("name", "env"):
        values = [getattr(s, attr) for s in ALL_SETTINGS]
        assert len(values) == len(set(values)), attr
    flags = [s.flag for s in ALL_SETTINGS if s.flag]
    assert len(flags) == len(set(flags))
    assert all(s.help and s.env.startswith("BEM_") for s in ALL_SETTINGS)


@pytest.mark.parametrize("s", [s for s in SETTINGS if s.parse in SAMPLE], ids=lambda s: s.env)
def test_each_env_var_reaches_its_field_and_its_flag_wins(s, monkeypatch):
    raw, value = _sample(s)
    monkeypatch.setenv(s.env, raw)
    assert getattr(settings_from_args(build_parser().parse_args(["serve"])), s.name) == value
    if s.flag is not None:
        monkeypatch.setenv(s.env, "")  # empty: the default (then the flag)
        assert getattr(settings_from_args(build_parser().parse_args(["serve"])), s.name) == s.default
        args = build_parser().parse_args(["serve", s.flag, raw])
        assert getattr(settings_from_args(args), s.name) == value


def test_defaults_are_the_settings_defaults(monkeypatch):
    for s in ALL_SETTINGS:
        monkeypatch.delenv(s.env, raising=False)
    assert settings_from_args(build_parser().parse_args(["serve"])) == Settings()


def test_cache_key_keeps_its_v1_layout():
    """The key of the same request and settings as before the table existed."""
    s = Settings(model_dir=Path("/m"), bem_dir=Path("/b"), top_k=2, hysteresis=0.1)
    assert cache_identity(s) == {"model": "bem", "model_dir": "/m", "bem_dir": "/b",
                                 "overrides": [2, None, 0.1, None, None, None, None]}
    key = _cache_key({"v": 1, **cache_identity(s), "prompt": "p", "params": {"a": 1},
                      "use_bem": True})
    assert key == "bem:inference:bcf2cb43df4cdccfdcaacda58d6b71559b7f4697e96867265e70912aa3d0f7df"


def test_only_settings_that_change_outputs_enter_the_cache_key():
    changing = {s.name for s in SETTINGS if s.changes_output}
    assert changing == {"model_name", "model_dir", "bem_dir", "top_k", "chunk_size", "hysteresis",
                        "router_temperature", "sigma_max", "trust_region", "min_confidence"}
    base = Settings()
    for s in SETTINGS:
        if s.parse in SAMPLE:
            other = Settings(**{s.name: _sample(s)[1]})
            assert (cache_identity(other) != cache_identity(base)) == s.changes_output, s.name


def test_lookup_by_name():
    assert setting("router_temperature").flag == "--temperature"
    assert setting("termination_message_path").flag is None

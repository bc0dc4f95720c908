"""Unit tests: token bucket, API keys, request schemas, CLI flags with env fallbacks."""
from __future__ import annotations

import pytest

from bem_runtime.cli import build_parser, settings_from_args
from bem_runtime.errors import InvalidInput, RateLimited, UnsupportedMediaType
from bem_runtime.ratelimit import TokenBuckets, TrustedProxies
from bem_runtime.schemas import GenerateBody, parse_body
from bem_runtime.settings import Settings, cidr_list, read_key_file


def test_token_bucket_refills_at_the_rate_and_isolates_clients():
    buckets = TokenBuckets(rate=2.0, burst=3)
    for _ in range(3):
        buckets.take("a", now=0.0)
    with pytest.raises(RateLimited) as info:
        buckets.take("a", now=0.0)
    assert info.value.headers["Retry-After"] == "1"
    buckets.take("b", now=0.0)  # another client has its own bucket
    buckets.take("a", now=0.5)  # one token back after 1/rate seconds
    with pytest.raises(RateLimited):
        buckets.take("a", now=0.5)


def test_key_file_ignores_blanks_and_comments_and_refuses_empty(tmp_path):
    f = tmp_path / "keys"
    f.write_text("\n# rotated 2026\nk1\n  k2  \n", encoding="utf-8")
    assert read_key_file(f) == ["k1", "k2"]
    f.write_text("\n# nothing\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no key"):
        read_key_file(f)


def test_parse_body_errors_name_the_field():
    with pytest.raises(UnsupportedMediaType):
        parse_body(b"{}", "text/plain", GenerateBody)
    with pytest.raises(InvalidInput) as info:
        parse_body(b'{"prompt": "x", "top_p": 0}', "application/json", GenerateBody)
    assert info.value.field == "top_p"
    body = parse_body(b'{"prompt": "x", "stop": "END"}', "application/json", GenerateBody)
    assert body.stop == "END" and body.max_new_tokens == 64


def test_env_vars_fill_flags_and_flags_win(monkeypatch):
    monkeypatch.setenv("BEM_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("BEM_PORT", "9000")
    monkeypatch.setenv("BEM_ROUTER_TEMPERATURE", "0.5")
    monkeypatch.setenv("BEM_API_KEYS", "a, b")
    args = build_parser().parse_args(["serve", "--port", "9100"])
    s = settings_from_args(args)
    assert (s.max_batch_size, s.port, s.router_temperature) == (4, 9100, 0.5)
    assert s.all_api_keys() == ("a", "b")
    assert s.merge_decode is False


def test_merge_decode_switch_from_env_and_bad_spelling_refused(monkeypatch, capsys):
    monkeypatch.setenv("BEM_MERGE_DECODE", "true")
    assert settings_from_args(build_parser().parse_args(["serve"])).merge_decode is True
    monkeypatch.setenv("BEM_MERGE_DECODE", "perhaps")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve"])
    assert "--merge-decode" in capsys.readouterr().err


@pytest.mark.parametrize(("env", "value", "said"), [
    ("BEM_MAX_QUEUE", "lots", "--max-queue: invalid int value: 'lots'"),
    ("BEM_TRUSTED_PROXIES", "10.0.0.0/8,not-a-net", "trusted-proxies: 'not-a-net' is not an IP"),
])
def test_bad_env_value_and_bad_settings_are_refused(monkeypatch, capsys, env, value, said):
    monkeypatch.setenv(env, value)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve"])
    assert said in capsys.readouterr().err
    with pytest.raises(ValueError, match="trusted-proxies: '300.1.1.1'"):
        Settings(trusted_proxies=("300.1.1.1",))
    assert cidr_list("10.1.2.3/8, ::1") == ("10.0.0.0/8", "::1/128")
    with pytest.raises(ValueError, match="device must be one of"):
        Settings(device="tpu")
    with pytest.raises(ValueError, match="max-batch-size must be >= 1"):
        Settings(max_batch_size=0)
    with pytest.raises(ValueError, match="admin-port must be in 1..65535, got 70000"):
        Settings(admin_port=70000)
    with pytest.raises(ValueError, match="port, metrics-port and admin-port must differ"):
        Settings(port=8080, metrics_port=9090, admin_port=8080)


def test_help_documents_every_env_var():
    parser = build_parser()
    serve = parser._subparsers._group_actions[0].choices["serve"]
    text = serve.format_help()
    for env in ("BEM_MODEL_DIR", "BEM_CHECKPOINT_DIR", "BEM_API_KEY_FILE", "BEM_REDIS_URL",
                "BEM_MAX_BATCH_SIZE", "BEM_MAX_QUEUE", "BEM_LOG_LEVEL", "BEM_DEVICE"):
        assert env in text


@pytest.mark.parametrize("raw, words", [
    (b"[" * 5000 + b"]" * 5000, "too deeply"),
    (b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", "not acceptable JSON"),
    (b'{"prompt": "\\ud800"}', "surrogate"),
    (b'{"prompt": "x", "stop": "\\udfff"}', "surrogate"),
])
def test_pathological_json_is_a_400_naming_the_problem(raw, words):
    with pytest.raises(InvalidInput, match=words) as info:
        parse_body(raw, "application/json", GenerateBody)
    assert info.value.field == "body"


def test_a_tiny_temperature_samples_like_greedy():
    import torch

    from bem_runtime.model.sampling import make_generator, select_tokens
    from bem_runtime.model.types import SamplingParams

    logits = torch.tensor([[0.5, 2.0, 1.0, -3.0], [3.0, 2.0, 1.0, -3.0]])
    for t in (1e-300, 5e-324):
        params = [SamplingParams(temperature=t, top_p=0.9, seed=1), SamplingParams(temperature=t, seed=2)]
        assert select_tokens(logits, params, [make_generator(p) for p in params]) == [1, 0]


@pytest.mark.parametrize("content, message", [
    ("not json", "is not valid JSON"),
    ('["a"]', "must hold a JSON object"),
    ('{"Bad_Name": "x"}', "not DNS-1123 labels"),
    ('{"toy": "x"}', "names 'toy', the --model-name"),
    ('{"a": "x", "b": "y", "c": "z"}', "exceeds --max-checkpoints=3"),
])
def test_a_bad_start_list_exits_2_naming_the_problem(tmp_path, capsys, content, message):
    from bem_runtime.cli import main

    listing = tmp_path / "start.json"
    listing.write_text(content)
    code = main(["serve", "--model-dir", str(tmp_path), "--bem-dir", str(tmp_path), "--model-name",
                 "toy", "--checkpoints-file", str(listing), "--max-checkpoints", "3"])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("token, message", [
    ("short", "at least 16 characters"),
    ("client-key-0123456789", "must not also be a client API key"),
])
def test_a_bad_admin_token_exits_2(tmp_path, capsys, monkeypatch, token, message):
    from bem_runtime.cli import main

    monkeypatch.setenv("BEM_API_KEYS", "client-key-0123456789")
    (tmp_path / "token").write_text(token + "\n")
    code = main(["serve", "--model-dir", str(tmp_path), "--bem-dir", str(tmp_path),
                 "--admin-token-file", str(tmp_path / "token")])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("127.0.0.1", [], "127.0.0.1"),  # a trusted proxy with no header: itself
    ("192.0.2.7", ["198.51.100.1"], "192.0.2.7"),  # untrusted peer: the header is ignored
    ("127.0.0.1", ["198.51.100.3, 198.51.100.1"], "198.51.100.1"),  # right-most untrusted
    ("127.0.0.1", ["198.51.100.3", "198.51.100.1, 10.1.2.3"], "198.51.100.1"),  # two headers
    ("127.0.0.1", ["10.9.9.9"], "10.9.9.9"),  # every hop trusted: the left-most
    ("127.0.0.1", ["198.51.100.3, junk, 10.0.0.2"], "10.0.0.2"),  # stop at a malformed hop
    ("::1", ["2001:db8::5"], "2001:db8::5"),
])
def test_trusted_proxies_name_the_client(peer, forwarded, client):
    proxies = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8", "::1"])
    assert proxies.client(peer, forwarded) == client


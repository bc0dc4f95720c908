"""Bad input against a real server: each gets the right 4xx and a JSON error naming the field."""
from __future__ import annotations

import pytest

from .conftest import API_KEY

pytestmark = pytest.mark.http

GEN = "/v1/generate"
OK = {"prompt": "hello", "max_new_tokens": 4, "seed": 1}

# (id, method, path, body, headers, key, status, field)
CASES = [
    ("malformed-json", "POST", GEN, b'{"prompt": "hi", ', None, "default", 400, "body"),
    ("not-an-object", "POST", GEN, b"[1, 2]", None, "default", 400, "body"),
    ("invalid-utf8", "POST", GEN, b'{"prompt": "\xff\xfe"}', None, "default", 400, "body"),
    ("missing-prompt", "POST", GEN, {"max_new_tokens": 4}, None, "default", 400, "prompt"),
    ("prompt-not-string", "POST", GEN, {"prompt": 5}, None, "default", 400, "prompt"),
    ("empty-prompt", "POST", GEN, {"prompt": ""}, None, "default", 400, "prompt"),
    ("max-tokens-string", "POST", GEN, {**OK, "max_new_tokens": "4"}, None, "default", 400,
     "max_new_tokens"),
    ("max-tokens-negative", "POST", GEN, {**OK, "max_new_tokens": -1}, None, "default", 400,
     "max_new_tokens"),
    ("max-tokens-huge", "POST", GEN, {**OK, "max_new_tokens": 10**9}, None, "default", 400,
     "max_new_tokens"),
    ("temperature-negative", "POST", GEN, {**OK, "temperature": -0.5}, None, "default", 400,
     "temperature"),
    ("top-p-above-one", "POST", GEN, {**OK, "top_p": 1.5}, None, "default", 400, "top_p"),
    ("seed-bool", "POST", GEN, {**OK, "seed": True}, None, "default", 400, "seed"),
    ("stream-string", "POST", GEN, {**OK, "stream": "yes"}, None, "default", 400, "stream"),
    ("too-many-stops", "POST", GEN, {**OK, "stop": ["a", "b", "c", "d", "e"]}, None, "default",
     400, "stop"),
    ("unknown-field", "POST", GEN, {**OK, "max_tokens": 4}, None, "default", 400, "max_tokens"),
    ("prompt-too-long", "POST", GEN, {**OK, "prompt": "lorem ipsum " * 200}, None, "default",
     400, "prompt"),
    ("oversize-body", "POST", GEN, {**OK, "prompt": "x" * 5000}, None, "default", 413, "body"),
    ("wrong-content-type", "POST", GEN, b"prompt=hi", {"Content-Type": "text/plain"}, "default",
     415, "Content-Type"),
    ("missing-key", "POST", GEN, OK, None, None, 401, "Authorization"),
    ("wrong-key", "POST", GEN, OK, None, "not-the-key", 401, "Authorization"),
    ("bad-auth-scheme", "POST", GEN, OK, {"Authorization": f"Basic {API_KEY}"}, None, 401,
     "Authorization"),
    ("unknown-model", "POST", "/v1/completions", {"model": "gpt-9", "prompt": "hi"}, None,
     "default", 404, "model"),
    ("completions-n", "POST", "/v1/completions", {"model": "toy", "prompt": "hi", "n": 2}, None,
     "default", 400, "n"),
    ("wrong-method", "GET", GEN, None, None, "default", 405, "method"),
    ("unknown-path", "POST", "/v1/nothing", OK, None, "default", 404, "path"),
    ("route-bad-prompt", "POST", "/v1/route", {"prompt": ["a"]}, None, "default", 400, "prompt"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_json_error_naming_the_field(server, case):
    _, method, path, body, headers, key, status, field = case
    reply = server.request(method, path, body, headers=headers, key=key)
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.json()["error"]
    assert error["field"] == field
    assert error["type"] and len(error["message"]) > 10
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


def test_the_same_requests_succeed_when_fixed(server):
    """Guards the table above: the errors come from the bad part, not from a broken server."""
    assert server.request("POST", GEN, OK).status == 200
    assert server.request("POST", "/v1/completions", {"model": "toy", "prompt": "hi",
                                                      "max_tokens": 2}).status == 200
    assert server.request("POST", "/v1/route", {"prompt": "a"}).status == 200


def test_messages_say_what_to_fix(server):
    huge = server.request("POST", GEN, {**OK, "max_new_tokens": 10**9}).json()["error"]
    assert "<= 64" in huge["message"]
    unknown = server.request("POST", GEN, {**OK, "max_tokens": 4}).json()["error"]
    assert "max_new_tokens" in unknown["message"]  # lists the allowed fields
    model = server.request("POST", "/v1/completions", {"model": "gpt-9", "prompt": "hi"})
    assert "'toy'" in model.json()["error"]["message"]
    method = server.request("GET", GEN)
    assert "POST" in method.headers["Allow"]

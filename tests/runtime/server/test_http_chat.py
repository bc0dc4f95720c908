"""POST /v1/chat/completions against a real runtime, driven by the official `openai` client:
plain and streamed answers in OpenAI's shapes, the tokenizer's chat template, 4xx naming the field."""
from __future__ import annotations

import openai
import pytest
from transformers import AutoTokenizer

from .conftest import API_KEY

pytestmark = pytest.mark.http
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "The quick brown fox"}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_plain_answer_is_the_completion_of_the_rendered_template(client, server, toy_assets):
    reply = client.chat.completions.create(model="toy", messages=MESSAGES, max_tokens=8, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == "toy" and reply.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.finish_reason in ("length", "stop")
    assert 1 <= reply.usage.completion_tokens <= 8
    prompt = AutoTokenizer.from_pretrained(toy_assets[0]).apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")  # the toy tokenizer ships a template
    plain = server.request("POST", "/v1/completions",
                           {"model": "toy", "prompt": prompt, "max_tokens": 8, "temperature": 0}).json()
    assert choice.message.content == plain["choices"][0]["text"]
    assert reply.usage.prompt_tokens == plain["usage"]["prompt_tokens"]


def test_streamed_chunks_add_up_to_the_plain_answer(client):
    plain = client.chat.completions.create(model="toy", messages=MESSAGES, max_tokens=10, seed=4)
    chunks = list(client.chat.completions.create(model="toy", messages=MESSAGES, max_tokens=10,
                                                 seed=4, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.model == "toy" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == plain.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_without_a_limit_the_answer_fits_the_server_limit(client):
    reply = client.chat.completions.create(model="toy", messages=MESSAGES, seed=1,
                                           extra_body={"max_completion_tokens": None})
    assert 1 <= reply.usage.completion_tokens <= 64  # --max-new-tokens-limit of the shared server


@pytest.mark.parametrize("body, field", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user"}]}, "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}, "messages"),
    ({"messages": [{"role": "user", "content": "word " * 300}]}, "messages"),  # too long
    ({"max_tokens": 1000}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"max_tokens": 2, "max_completion_tokens": 2}, "max_completion_tokens"),
    ({"n": 2}, "n"),
    ({"temperature": "hot"}, "temperature"),
    ({"tools": []}, "tools"),
])
def test_bad_input_is_a_400_naming_the_field(server, body, field):
    reply = server.request("POST", CHAT, {"model": "toy", "messages": MESSAGES, **body})
    assert reply.status == 400, reply.body
    assert reply.json()["error"]["field"] == field


def test_unknown_model_is_404_through_the_client(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES, max_tokens=2)
    assert err.value.status_code == 404
    assert err.value.body["field"] == "model" and "'toy'" in err.value.body["message"]


def test_text_parts_are_joined(server):
    parts = [{"type": "text", "text": "The quick "}, {"type": "text", "text": "brown fox"}]
    joined = server.request("POST", CHAT, {"model": "toy", "max_tokens": 4, "temperature": 0,
                                           "messages": [MESSAGES[0], {"role": "user", "content": parts}]})
    whole = server.request("POST", CHAT, {"model": "toy", "messages": MESSAGES, "max_tokens": 4,
                                          "temperature": 0})
    assert joined.status == whole.status == 200
    assert joined.json()["choices"] == whole.json()["choices"]

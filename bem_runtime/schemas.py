"""Request bodies: strict pydantic models (no type coercion, unknown fields refused).

Validation errors become InvalidInput naming the field, so a client sees e.g.
`max_new_tokens: Input should be greater than or equal to 1`.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bem_runtime.errors import InvalidInput, UnsupportedMediaType

MAX_STOP_SEQUENCES = 4
MAX_MESSAGES = 256
MAX_MESSAGE_CHARS = 1 << 20  # the body limit (--max-body-bytes) bounds it first
SEED_MAX = 2**63 - 1

Prompt = Annotated[str, Field(min_length=1)]
ModelName = Annotated[str, Field(min_length=1, max_length=253)]
Temperature = Annotated[float, Field(ge=0.0, le=10.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
StopSeq = Annotated[str, Field(min_length=1, max_length=64)]
Stop = StopSeq | Annotated[list[StopSeq], Field(max_length=MAX_STOP_SEQUENCES)] | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GenerateBody(_Strict):
    prompt: Prompt
    model: ModelName | None = None  # a resident checkpoint; default: --model-name
    max_new_tokens: Annotated[int, Field(ge=1)] = 64
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    seed: Seed | None = None
    stop: Stop = None
    stream: bool = False
    profile: bool = False
    use_bem: bool = True  # false runs the bare base model (for comparisons)


class RouteBody(_Strict):
    prompt: Prompt
    model: ModelName | None = None


class CheckpointBody(_Strict):
    """PUT /v1/checkpoints/{name}: the checkpoint directory (absolute, or under the root)."""

    path: Annotated[str, Field(min_length=1, max_length=4096)]


class CompletionBody(_Strict):
    """OpenAI /v1/completions; fields we cannot honour only accept their neutral value."""

    model: ModelName
    prompt: Prompt
    max_tokens: Annotated[int, Field(ge=1)] = 16
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    seed: Seed | None = None
    stop: Stop = None
    stream: bool = False
    n: Literal[1] = 1
    best_of: Literal[1] | None = None
    echo: Literal[False] = False
    logprobs: None = None
    presence_penalty: Literal[0, 0.0] = 0
    frequency_penalty: Literal[0, 0.0] = 0
    user: str | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: (Annotated[str, Field(max_length=MAX_MESSAGE_CHARS)]
              | Annotated[list[TextPart], Field(min_length=1, max_length=64)])
    name: Annotated[str, Field(min_length=1, max_length=64)] | None = None

    def template_input(self) -> dict[str, str]:
        """What the chat template reads: role and the text (parts joined)."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": text}


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatBody(_Strict):
    """OpenAI /v1/chat/completions; fields we cannot honour only accept their neutral value."""

    model: ModelName
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Temperature = 1.0
    top_p: TopP = 1.0
    seed: Seed | None = None
    stop: Stop = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    logprobs: Literal[False] | None = None
    presence_penalty: Literal[0, 0.0] = 0
    frequency_penalty: Literal[0, 0.0] = 0
    user: str | None = None

    def token_limit(self) -> tuple[int | None, str]:
        """The requested completion length and the field it came from."""
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise InvalidInput("send max_completion_tokens or max_tokens, not both",
                               field="max_completion_tokens")
        if self.max_tokens is not None:
            return self.max_tokens, "max_tokens"
        return self.max_completion_tokens, "max_completion_tokens"


def stop_tuple(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    return (stop,) if isinstance(stop, str) else tuple(stop)


def parse_body(raw: bytes, content_type: str, model: type[_Strict]) -> Any:
    """Bytes of a POST body -> validated model, or a typed error that says what to fix."""
    if content_type != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {content_type or 'none'}",
            field="Content-Type")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"body is not valid UTF-8 (byte {exc.start}); encode the JSON as UTF-8",
                           field="body") from None
    try:
        data = json.loads(text)
        # Lone surrogate escapes ("\\ud800") decode to strings no tokenizer or cache key accepts.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc.msg} at line {exc.lineno} "
                           f"column {exc.colno}", field="body") from None
    except RecursionError:
        raise InvalidInput("body nests JSON arrays or objects too deeply", field="body") from None
    except UnicodeEncodeError:
        raise InvalidInput("body contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); "
                           "send valid Unicode text", field="body") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's digit limit
        raise InvalidInput(f"body is not acceptable JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"body must be a JSON object, got {type(data).__name__}", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _to_invalid_input(exc, model) from None


def _to_invalid_input(exc: ValidationError, model: type[_Strict]) -> InvalidInput:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    top = str(err["loc"][0]) if err["loc"] else field
    if err["type"] == "extra_forbidden":
        allowed = ", ".join(model.model_fields)
        return InvalidInput(f"unknown field '{field}'; allowed fields: {allowed}", field=top)
    if err["type"] == "missing":
        return InvalidInput(f"field '{field}' is required", field=top)
    given = err.get("input")
    shown = json.dumps(given)[:80] if _jsonable(given) else type(given).__name__
    return InvalidInput(f"{field}: {err['msg']} (got {shown})", field=top)


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True

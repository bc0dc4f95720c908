"""The inference engine: a frozen base model with a BEM checkpoint attached, batched generation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from jinja2 import TemplateError
from transformers import AutoModelForCausalLM, AutoTokenizer

from .bem import BEMPool, RowGroup
from .checkpoint import Checkpoint, CheckpointFiles, build_checkpoint, read_checkpoint, read_files
from .errors import ChatTemplateError, CheckpointError, PromptTooLongError
from .routing import RoutingState
from .runner import BatchForward
from .session import DecodeBatch
from .types import GenerationRequest, GenerationResult, RoutingDecision, RoutingOverrides, SamplingParams

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}  # fmt: skip


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(sorted(_DTYPES))}; got {dtype!r}")
    if device.type == "cpu" and _DTYPES[dtype] != torch.float32:
        raise ValueError(f"dtype {dtype} needs a CUDA device; the CPU path runs in float32")
    return _DTYPES[dtype]


def load_base(model_dir: Path, device: torch.device, dtype: torch.dtype):
    if not (model_dir / "config.json").is_file():
        raise CheckpointError(f"base model directory {model_dir} has no config.json (expected a Hugging Face layout)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, dtype=dtype, attn_implementation="sdpa"
        )
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load the base model from {model_dir}: {exc}") from exc
    model.to(device).eval().requires_grad_(False)
    return model, tokenizer


class Engine:
    """Blocking engine; the server calls it from one worker thread (a lock serialises callers).

    One frozen base model and any number of resident BEM checkpoints by name; the one it was
    loaded with is the start checkpoint (`default`). Loading or removing a checkpoint never
    changes a row already running: a row holds its Checkpoint object until it finishes."""

    def __init__(
        self, model, tokenizer, pool: BEMPool, device: torch.device, start: Checkpoint,
        overrides: RoutingOverrides | None = None, allow_qkv: bool = False,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pool = pool
        self.device = device
        self.overrides = overrides  # deployment overrides: applied to every checkpoint loaded
        self.allow_qkv = allow_qkv
        self.checkpoints: dict[str, Checkpoint] = {}
        self.default = start.name
        self.max_context = int(getattr(model.config, "max_position_embeddings", 2048))
        self.lock = threading.RLock()  # one forward at a time: adapters share one gate holder
        self._tok_lock = threading.Lock()  # fast tokenizers may fail when encoding from two threads
        eos = {tokenizer.eos_token_id, *_as_list(model.generation_config.eos_token_id)}
        self.eos_ids = {i for i in eos if i is not None}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self.add_checkpoint(start)

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        bem_dir: str | Path,
        *,
        name: str = "bem",
        device: str = "auto",
        overrides: RoutingOverrides | None = None,
        dtype: str = "auto",
        allow_qkv: bool = False,
        merge_decode: bool = False,
    ) -> Engine:
        """allow_qkv: accept Q/K/V sites. merge_decode: on decode steps where every row shares
        one checkpoint and gate, fold it into the weights (per-token cost of the base model; extra
        memory of one weight copy per attached site; results equal up to float rounding)."""
        dev = resolve_device(device)
        model, tokenizer = load_base(Path(model_dir), dev, resolve_dtype(dtype, dev))
        start = read_checkpoint(model, Path(bem_dir), overrides, name=name, allow_qkv=allow_qkv)
        engine = cls(model, tokenizer, BEMPool(model, merge_decode=merge_decode), dev, start, overrides, allow_qkv)
        log.info(
            "Loaded %s with %d BEM experts on %d sites (%s, %s); clamps %s",
            type(model).__name__, start.num_experts, len(start.sites), dev, model.dtype, start.load_report,
        )  # fmt: skip
        return engine

    @property
    def bem(self) -> Checkpoint:
        """The start checkpoint."""
        return self.checkpoints[self.default]

    @property
    def num_experts(self) -> int:
        return self.bem.num_experts

    @property
    def load_report(self) -> dict[str, int]:
        return dict(self.bem.load_report)

    def read_files(self, bem_dir: str | Path) -> CheckpointFiles:
        """Read a checkpoint's files (CheckpointError); file work only, safe on any thread."""
        return read_files(Path(bem_dir), self.overrides)

    def build_checkpoint(self, name: str, files: CheckpointFiles) -> Checkpoint:
        """Validate and govern read files for this base; nothing changes (CheckpointError)."""
        with self.lock, torch.inference_mode():
            return build_checkpoint(self.model, files, name=name, allow_qkv=self.allow_qkv)

    def read_checkpoint(self, name: str, bem_dir: str | Path) -> Checkpoint:
        return self.build_checkpoint(name, self.read_files(bem_dir))

    def add_checkpoint(self, ckpt: Checkpoint) -> Checkpoint | None:
        """Make a read checkpoint resident under its name; returns the one it replaces."""
        with self.lock:
            self.pool.install(ckpt)
            old = self.checkpoints.get(ckpt.name)
            self.checkpoints[ckpt.name] = ckpt
            return old

    def load_checkpoint(self, name: str, bem_dir: str | Path) -> Checkpoint:
        ckpt = self.read_checkpoint(name, bem_dir)
        self.add_checkpoint(ckpt)
        return ckpt

    def remove_checkpoint(self, name: str) -> Checkpoint:
        """New requests no longer find it; rows running on it finish (KeyError when unknown)."""
        if name == self.default and len(self.checkpoints) == 1:
            raise ValueError(f"'{name}' is the only resident checkpoint")
        with self.lock:
            return self.checkpoints.pop(name)

    def checkpoint(self, name: str | None = None) -> Checkpoint:
        """A resident checkpoint by name (None: the start checkpoint); KeyError when unknown."""
        key = self.default if name is None else name
        if key not in self.checkpoints:
            raise KeyError(f"no checkpoint named '{key}'; resident: {sorted(self.checkpoints)}")
        return self.checkpoints[key]

    def checkpoint_for(self, request: GenerationRequest) -> Checkpoint | None:
        if not request.use_bem:
            return None
        if isinstance(request.checkpoint, Checkpoint):
            return request.checkpoint
        return self.checkpoint(request.checkpoint)

    def encode(self, text: str) -> list[int]:
        with self._tok_lock:
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        if not ids and self.tokenizer.bos_token_id is not None:
            ids = [self.tokenizer.bos_token_id]
        return ids

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        """The prompt text of a conversation, by the tokenizer's chat template, ending with the
        assistant's turn to answer."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ChatTemplateError("the base model's tokenizer has no chat template; send a plain "
                                    "prompt to /v1/completions instead")
        try:
            with self._tok_lock:
                return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except TemplateError as exc:  # e.g. a template that refuses a role order
            raise ChatTemplateError(f"the chat template refused these messages: {exc}") from None

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def check_fits(self, index: int, ids: list[int], params: SamplingParams) -> None:
        if not ids:
            raise ValueError(f"request {index}: the prompt is empty; send at least one token of text")
        if len(ids) + params.max_new_tokens > self.max_context:
            raise PromptTooLongError(
                f"request {index}: prompt of {len(ids)} tokens plus max_new_tokens={params.max_new_tokens} "
                f"exceeds the model context of {self.max_context} tokens; shorten the prompt or lower max_new_tokens"
            )

    def route(self, prompt: str, checkpoint: str | Checkpoint | None = None) -> list[RoutingDecision]:
        """Routing decisions for the prompt's positions; runs the model only up to the router layer."""
        ids = self.encode(prompt)
        self.check_fits(0, ids, SamplingParams(max_new_tokens=1))
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else self.checkpoint(checkpoint)
        with self.lock, torch.inference_mode():
            state = RoutingState(ckpt.policy, [len(ids)], self.device)
            BatchForward(self.model, [ids], self.pad_id, self.pool, [RowGroup([ckpt], state, [0])]).route_only()
            return state.finish(0, len(ids))

    def score(
        self, ids: list[int], prompt_len: int, *, incremental: bool = False, use_bem: bool = True,
        checkpoint: str | None = None,
    ) -> tuple[torch.Tensor, list[RoutingDecision]]:
        """Teacher forcing: logits [len(ids), V] (float32, CPU) and routing decisions of a sequence.

        incremental=False runs one full-sequence forward; True prefills the prompt and then feeds
        the rest a token at a time through the KV cache. BEM.md requires both to agree.
        """
        if not 0 < prompt_len <= len(ids):
            raise ValueError(f"prompt_len must be in [1, {len(ids)}], got {prompt_len}")
        ckpt = self.checkpoint(checkpoint)
        with self.lock, torch.inference_mode():
            state = RoutingState(ckpt.policy, [prompt_len], self.device) if use_bem else None
            first = ids[:prompt_len] if incremental else ids
            groups = [RowGroup([ckpt], state, [0])] if state is not None else []
            batch = BatchForward(self.model, [first], self.pad_id, self.pool, groups)
            parts = [batch.prefill(keep=0)[0]]
            if incremental:
                parts += [batch.step([t], [True]) for t in ids[prompt_len:]]
            logits = torch.cat(parts).float().cpu()
            return logits, state.finish(0, len(ids)) if state is not None else []

    def open_batch(self, use_bem: bool = True, hold: bool = False) -> DecodeBatch:
        """An empty continuous batch: admit rows at any step, step them, cancel them (hold=True:
        finished rows stay in the forward pass until all have finished, the old static batch)."""
        return DecodeBatch(self, use_bem, hold)

    def generate_batch(
        self,
        requests: Sequence[GenerationRequest],
        on_token: Callable[[int, str], None] | None = None,
        *,
        use_bem: bool = True,
    ) -> list[GenerationResult]:
        """Generate for all requests in shared forward passes; on_token(index, delta) streams text."""
        if not requests:
            return []
        encoded = [self.encode(r.prompt) for r in requests]
        for i, (ids, req) in enumerate(zip(encoded, requests)):
            self.check_fits(i, ids, req.params)  # refuse the whole batch before any work
        batch = self.open_batch(use_bem)
        results: dict[int, GenerationResult] = {}
        events = batch.admit(list(enumerate(requests)))
        while True:
            for ev in events:
                if ev.error is not None:
                    raise ev.error
                if ev.delta and on_token is not None:
                    on_token(ev.key, ev.delta)
                if ev.result is not None:
                    results[ev.key] = ev.result
            if not batch:
                return [results[i] for i in range(len(requests))]
            events = batch.step()

    def warmup(self) -> None:
        """One short greedy generation with and without BEM (allocations, kernels, caches)."""
        req = [GenerationRequest("warm up", SamplingParams(max_new_tokens=2, temperature=0.0))]
        self.generate_batch(req)
        self.generate_batch(req, use_bem=False)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]

"""Per-request output text: incremental detokenisation, stop strings and streaming deltas."""

from __future__ import annotations

from typing import Any

from .types import SamplingParams


def _held_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of text that could still grow into a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class RowOutput:
    """Collects one request's tokens; the streamed deltas always concatenate to the final text."""

    def __init__(self, tokenizer: Any, params: SamplingParams, eos_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.params = params
        self.eos_ids = eos_ids
        self.ids: list[int] = []
        self.sampled = 0  # every sampled token, EOS included: each took a decoding step
        self.text = ""
        self.emitted = 0
        self.done = False
        self.finish_reason = "length"

    def _finish(self, reason: str) -> str:
        self.done = True
        self.finish_reason = reason
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta

    def push(self, token: int) -> str:
        """Add a sampled token; return the text that may be streamed now."""
        self.sampled += 1
        if token in self.eos_ids:
            return self._finish("stop")
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        cuts = [i for i in (text.find(s) for s in self.params.stop) if i >= 0]
        if cuts:
            self.text = text[: min(cuts)]
            return self._finish("stop")
        self.text = text
        if self.sampled >= self.params.max_new_tokens:
            return self._finish("length")
        # Hold back an incomplete UTF-8 sequence and anything that may begin a stop string.
        safe = len(text.rstrip("\ufffd"))
        safe = min(safe, len(text) - _held_suffix(text, self.params.stop))
        if safe <= self.emitted:
            return ""
        delta = text[self.emitted : safe]
        self.emitted = safe
        return delta

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
    """Collects one request's tokens; the streamed deltas always concatenate to the final text,
    and the final text is what decoding every token at once gives (stop strings cut it).

    Each token decodes a short window, not the whole output: decoding everything again on every
    step made a generation quadratic in its length (at 2,000 tokens, milliseconds per row per
    step). The window starts at `prefix`, a few tokens back, and what the tokens from `read` on
    add is the difference between decoding the window with and without them; decoding from a
    token back keeps what a tokenizer decodes differently at the start of a text (a SentencePiece
    word's leading space) out of the difference. Tokens whose bytes do not yet end a character
    (the window decodes to a trailing U+FFFD) wait for the next one.
    """

    def __init__(self, tokenizer: Any, params: SamplingParams, eos_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.params = params
        self.eos_ids = eos_ids
        self.ids: list[int] = []
        self.sampled = 0  # every sampled token, EOS included: each took a decoding step
        self.text = ""  # decoded text of ids[:read]
        self.emitted = 0
        self.done = False
        self.finish_reason = "length"
        self._prefix = 0  # decoding window start
        self._read = 0  # ids[:read] are in text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _advance(self, final: bool) -> None:
        """Append what ids[read:] add to the text, unless they end inside a character (and this
        is not the end: then they are decoded as they are, as a full decode would)."""
        if self._read == len(self.ids):
            return
        before = self._decode(self.ids[self._prefix : self._read]) if self._read > self._prefix else ""
        after = self._decode(self.ids[self._prefix :])
        if not final and (len(after) <= len(before) or after.endswith("\ufffd")):
            return
        self.text += after[len(before) :]
        self._prefix, self._read = self._read, len(self.ids)

    def _finish(self, reason: str) -> str:
        self.done = True
        self.finish_reason = reason
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta

    def _cut_at_stop(self, searched: int) -> bool:
        """Truncate the text at the earliest stop string that ends after position `searched`."""
        cuts = [i for i in (self.text.find(s, max(0, searched - len(s) + 1)) for s in self.params.stop) if i >= 0]
        if cuts:
            self.text = self.text[: min(cuts)]
        return bool(cuts)

    def push(self, token: int) -> str:
        """Add a sampled token; return the text that may be streamed now."""
        self.sampled += 1
        final = token in self.eos_ids or self.sampled >= self.params.max_new_tokens
        if token not in self.eos_ids:
            self.ids.append(token)
        searched = len(self.text)
        self._advance(final)
        if self._cut_at_stop(searched):
            return self._finish("stop")
        if final:
            return self._finish("stop" if token in self.eos_ids else "length")
        # Hold back anything that may begin a stop string.
        safe = len(self.text) - _held_suffix(self.text, self.params.stop)
        if safe <= self.emitted:
            return ""
        delta = self.text[self.emitted : safe]
        self.emitted = safe
        return delta

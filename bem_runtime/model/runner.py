"""Batched forward passes over a KV cache: left padding, attention mask, per-row positions."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .bem import AttachedBEM, ForwardPlan, RoutingDone
from .routing import RoutingState


class BatchForward:
    """One batch of rows with different lengths, prefilled together then decoded a token a step.

    Rows are left-padded so that every row's newest token sits in the last column; each row gets
    its own position ids, so padding never shifts a row's positions (its output does not depend
    on the other rows).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        rows: list[list[int]],
        pad_id: int,
        bem: AttachedBEM | None = None,
        routing: RoutingState | None = None,
    ) -> None:
        self.model = model
        self.bem = bem
        self.routing = routing
        self.device = next(model.parameters()).device
        self.lengths = [len(r) for r in rows]
        width = max(self.lengths)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        self.input_ids = ids.to(self.device)
        self.mask = mask.to(self.device)
        self.cache = DynamicCache(config=model.config)
        self.cache.layers = [_AppendLayer() if type(layer) is DynamicLayer else layer for layer in self.cache.layers]
        self.pad_id = pad_id

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, counts: list[int], keep: int, stop: bool = False):
        if self.bem is not None and self.routing is not None:
            self.bem.plan = ForwardPlan(self.routing, counts, stop_after_routing=stop)
        try:
            out = self.model(
                input_ids=ids,
                attention_mask=self.mask,
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=keep,
            )
        finally:
            if self.bem is not None:
                self.bem.plan = None
                self.bem.holder.gate = None
                self.bem.holder.merged = False
        return out.logits

    def _prefill_positions(self) -> torch.Tensor:
        return (self.mask.cumsum(-1) - 1).clamp(min=0)

    def prefill(self, keep: int = 1) -> torch.Tensor:
        """Run all prompts; logits [B, keep, V] of the last `keep` columns (0: all columns)."""
        return self._forward(self.input_ids, self._prefill_positions(), list(self.lengths), keep)

    def route_only(self) -> None:
        """Run the prompts only up to the router layer (routing decisions, no logits)."""
        try:
            self._forward(self.input_ids, self._prefill_positions(), list(self.lengths), 1, stop=True)
        except RoutingDone:
            return
        raise RuntimeError("the router hook did not run: is the BEM checkpoint attached?")

    def step(self, tokens: list[int], active: list[bool]) -> torch.Tensor:
        """Feed one token per row (finished rows feed padding that nobody reads); logits [B, V]."""
        ids = torch.tensor(tokens, dtype=torch.long).unsqueeze(1).to(self.device)
        positions = torch.tensor(self.lengths, dtype=torch.long).unsqueeze(1).to(self.device)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(tokens), 1))], dim=1)
        counts = [1 if a else 0 for a in active]
        logits = self._forward(ids, positions, counts, 1)
        self.lengths = [n + 1 for n in self.lengths]
        return logits[:, -1]

    def select(self, keep: list[int]) -> None:
        """Keep only these rows, then drop the leading columns no remaining row attends to."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[idx], layer.values[idx]
        self.mask = self.mask[idx]
        self.lengths = [self.lengths[i] for i in keep]
        if self.routing is not None:
            self.routing.select(keep)
        used = self.mask.any(0).nonzero()
        first = int(used[0]) if len(used) else self.mask.shape[1]
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def join(self, other: BatchForward) -> None:
        """Append other's rows; the narrower side is left-padded with masked columns."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)])
            mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)])
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(other.mask, width, 1)])
        self.lengths = self.lengths + other.lengths
        if self.routing is not None and other.routing is not None:
            self.routing.join(other.routing)


class _AppendLayer(DynamicLayer):
    """A DynamicLayer that writes each step's keys and values into spare columns instead of
    concatenating: DynamicLayer copies the whole cache of every row on every decode step, which
    on a CPU costs about as much memory traffic as the weights once a batch is wide.

    `keys`/`values` stay plain tensors (views of the buffers), so select() and join() may still
    replace them; an update then adopts the replacement and moves it into a new buffer once.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, t = self.get_seq_length(), key_states.shape[-2]
        kbuf, vbuf = self._kbuf, self._vbuf
        own = (kbuf is not None and n > 0 and self.keys.data_ptr() == kbuf.data_ptr()
               and self.keys.stride() == kbuf.stride() and self.values.data_ptr() == vbuf.data_ptr()
               and self.values.stride() == vbuf.stride())
        if not own or n + t > kbuf.shape[-2]:
            capacity = n + t + max(64, (n + t) // 2)  # amortised: a copy every ~n/2 steps
            shape = (*key_states.shape[:-2], capacity, key_states.shape[-1])
            kbuf = key_states.new_empty(shape)
            vbuf = value_states.new_empty((*shape[:-1], value_states.shape[-1]))
            if n:
                kbuf[..., :n, :] = self.keys
                vbuf[..., :n, :] = self.values
            self._kbuf, self._vbuf = kbuf, vbuf
        kbuf[..., n : n + t, :] = key_states
        vbuf[..., n : n + t, :] = value_states
        self.keys, self.values = kbuf[..., : n + t, :], vbuf[..., : n + t, :]
        return self.keys, self.values


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)

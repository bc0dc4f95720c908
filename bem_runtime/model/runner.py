"""Batched forward passes over a KV cache: left padding, attention mask, per-row positions."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .bem import BEMPool, ForwardPlan, RoutingDone, RowGroup, cohort_key
from .routing import RoutingState


class BatchForward:
    """One batch of rows with different lengths, prefilled together then decoded a token a step.

    Rows are left-padded so that every row's newest token sits in the last column; each row gets
    its own position ids, so padding never shifts a row's positions (its output does not depend
    on the other rows). The rows of checkpoints that route alike form a group with its routing
    state (bem.RowGroup); a row in no group runs the bare base model. Rows leaving or joining
    renumber the groups' members.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        rows: list[list[int]],
        pad_id: int,
        pool: BEMPool | None = None,
        groups: list[RowGroup] | None = None,
    ) -> None:
        self.model = model
        self.pool = pool
        self.groups = list(groups or [])  # rows in no group run the bare base model
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
        self._index_groups()

    def routing_of(self, row: int) -> tuple[RoutingState, int] | None:
        """The routing state of a batch row and the row's index in it (None: a bare row)."""
        for group in self.groups:
            if row in group.members:
                return group.state, group.members.index(row)
        return None

    def _index_groups(self) -> None:
        every = list(range(len(self.lengths)))
        for group in self.groups:
            group.rows = None if group.members == every else torch.tensor(
                group.members, dtype=torch.long, device=self.device)
            group.index(self.device)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, counts: list[int], keep: int, stop: bool = False):
        if self.pool is not None:
            self.pool.begin(ForwardPlan(self.groups, counts, stop_after_routing=stop) if self.groups else None)
        try:
            out = self.model(
                input_ids=ids,
                attention_mask=self._attention_mask(),
                position_ids=positions,
                past_key_values=self.cache,
                use_cache=True,
                logits_to_keep=keep,
            )
        finally:
            if self.pool is not None:
                self.pool.end()
        return out.logits

    def _attention_mask(self) -> torch.Tensor | None:
        """None for a lone row: it has no padding (leading columns nobody attends to are dropped),
        and without a mask the model skips checking one every layer's attention would ignore."""
        return self.mask if len(self.lengths) > 1 else None

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
        raise RuntimeError("the router hook did not run: is the BEM checkpoint installed?")

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
        """Row j becomes old row keep[j] (the others leave), then the leading columns no
        remaining row attends to are dropped. Only the rows that move are copied."""
        for layer in self.cache.layers:
            if isinstance(layer, _AppendLayer):
                layer.select(keep)
            else:
                idx = torch.tensor(keep, dtype=torch.long, device=self.device)
                layer.keys, layer.values = layer.keys[idx], layer.values[idx]
        self.mask = self.mask[torch.tensor(keep, dtype=torch.long, device=self.device)]
        self.lengths = [self.lengths[i] for i in keep]
        self._select_groups(keep)
        used = self.mask.any(0).nonzero()
        first = int(used[0]) if len(used) else self.mask.shape[1]
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                if isinstance(layer, _AppendLayer):
                    layer.drop_leading(first)
                else:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def join(self, other: BatchForward) -> None:
        """Append other's rows; the narrower side is left-padded with masked columns."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            if isinstance(mine, _AppendLayer):
                mine.join(theirs.keys, theirs.values)
            else:
                mine.keys = torch.cat([_pad_left(mine.keys, width, 2), _pad_left(theirs.keys, width, 2)])
                mine.values = torch.cat([_pad_left(mine.values, width, 2), _pad_left(theirs.values, width, 2)])
        self.mask = torch.cat([_pad_left(self.mask, width, 1), _pad_left(other.mask, width, 1)])
        offset = len(self.lengths)
        self.lengths = self.lengths + other.lengths
        for theirs in other.groups:
            theirs.members = [m + offset for m in theirs.members]
            key = cohort_key(theirs.lead)
            mine = next((g for g in self.groups if cohort_key(g.lead) == key), None)
            if mine is None:
                self.groups.append(theirs)
            else:
                mine.absorb(theirs)
        self._index_groups()

    def _select_groups(self, keep: list[int]) -> None:
        """Each group keeps its rows that stay, renumbered; a group left empty goes."""
        new_row = {old: new for new, old in enumerate(keep)}
        groups = []
        for group in self.groups:
            local = [i for i, m in enumerate(group.members) if m in new_row]
            if not local:
                continue
            group.select(local, [new_row[group.members[i]] for i in local])
            groups.append(group)
        self.groups = groups
        self._index_groups()


class _AppendLayer(DynamicLayer):
    """A DynamicLayer whose keys and values live in buffers with spare rows and columns, so that
    the batch's three changes copy only what changes. DynamicLayer concatenates on every decode
    step, and a batch that joins or drops a row rebuilds the whole cache: at 32 rows that was
    about as much memory traffic as the step itself.

    The cache is the view buf[:n, :, lo:hi]. A decode step writes column hi. A leaving row's slot
    is refilled by moving one row from the tail (select); a joining row is written into row n,
    left-padded with zeroed masked columns (join); columns no row attends to any more are dropped
    by moving lo. The whole cache is copied only when the spare columns run out (about every
    width/2 steps), the rows outgrow the buffer, or a joining row is wider than the room left of lo.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self.n = self.lo = self.hi = 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._k is None:
            self.n = key_states.shape[0]
            self._reserve(key_states, value_states, rows=self.n, width=0, left=0)
        t = key_states.shape[-2]
        if self.hi + t > self._k.shape[2]:
            self._reserve(key_states, value_states, rows=self._k.shape[0], width=self.hi - self.lo + t, left=0)
        self._k[: self.n, :, self.hi : self.hi + t] = key_states
        self._v[: self.n, :, self.hi : self.hi + t] = value_states
        self.hi += t
        return self._view()

    def _view(self):
        self.keys = self._k[: self.n, :, self.lo : self.hi]
        self.values = self._v[: self.n, :, self.lo : self.hi]
        return self.keys, self.values

    def _reserve(self, k_like: torch.Tensor, v_like: torch.Tensor, rows: int, width: int, left: int) -> None:
        """New buffers for `rows` rows and `width` columns plus spare; the cache moves to start at
        column `left` (zeroed room before it for rows that join wider)."""
        cols = left + width + max(64, width // 2)  # amortised: a copy every ~width/2 steps
        k = k_like.new_empty((rows, k_like.shape[1], cols, k_like.shape[-1]))
        v = v_like.new_empty((rows, v_like.shape[1], cols, v_like.shape[-1]))
        old = self.hi - self.lo
        if self._k is not None and self.n and old:
            k[: self.n, :, left : left + old] = self._k[: self.n, :, self.lo : self.hi]
            v[: self.n, :, left : left + old] = self._v[: self.n, :, self.lo : self.hi]
        self._k, self._v, self.lo, self.hi = k, v, left, left + old

    def select(self, keep: list[int]) -> None:
        moved = [(j, i) for j, i in enumerate(keep) if i != j]
        if moved:
            dst = torch.tensor([j for j, _ in moved], dtype=torch.long, device=self._k.device)
            src = torch.tensor([i for _, i in moved], dtype=torch.long, device=self._k.device)
            self._k[dst, :, self.lo : self.hi] = self._k[src, :, self.lo : self.hi]
            self._v[dst, :, self.lo : self.hi] = self._v[src, :, self.lo : self.hi]
        self.n = len(keep)
        self._view()

    def drop_leading(self, columns: int) -> None:
        self.lo += columns
        self._view()

    def join(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        m, theirs = keys.shape[0], keys.shape[-2]
        mine = self.hi - self.lo
        wider = max(0, theirs - mine)
        cap = self._k.shape[0]
        if self.n + m > cap or wider > self.lo:
            rows = cap if self.n + m <= cap else max(self.n + m, 2 * cap)
            self._reserve(keys, values, rows=rows, width=mine, left=wider)
        if wider:  # the rows already here get masked columns on the left
            self.lo -= wider
            self._k[: self.n, :, self.lo : self.lo + wider] = 0
            self._v[: self.n, :, self.lo : self.lo + wider] = 0
        rows = slice(self.n, self.n + m)
        self._k[rows, :, self.lo : self.hi - theirs] = 0  # masked: finite, so 0 x value stays 0
        self._v[rows, :, self.lo : self.hi - theirs] = 0
        self._k[rows, :, self.hi - theirs : self.hi] = keys
        self._v[rows, :, self.hi - theirs : self.hi] = values
        self.n += m
        self._view()


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)

"""Iteration-level (continuous) batching: rows join a running batch after their own prefill and
leave it the step they finish or are cancelled.

Joining left-pads the shorter side (cache and mask) so every row's newest token stays in the last
column; each row keeps its own positions, routing state, sampling generator and output, so a row
that joins mid-flight computes exactly what it would alone (BEM.md's batch independence).
Leaving drops the row's cache and the leading columns nobody attends to any more, so a batch that
never empties under steady traffic does not grow without bound.

`hold=True` is the static batcher this replaced, kept as the benchmark's baseline: a finished row
stays in the forward pass (fed padding, its output unread) until every row of the batch has
finished, so each step costs what the batch's widest moment cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .bem import BEMPool, RowGroup, cohort_key
from .checkpoint import Checkpoint
from .errors import NonFiniteLogitsError
from .routing import RoutingState
from .runner import BatchForward
from .sampling import make_generator, select_tokens
from .text import RowOutput
from .types import GenerationRequest, GenerationResult, SamplingParams


class BatchEngine(Protocol):
    """What a DecodeBatch uses of the engine that opens it (engine.Engine). Declared here, where
    it is used, so that this module never imports the engine: the engine imports this one."""

    model: Any  # the causal LM, its projections wrapped by the pool
    tokenizer: Any
    pool: BEMPool
    device: torch.device
    lock: Any  # held around every forward pass (a threading.RLock)
    eos_ids: set[int]
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def checkpoint_for(self, request: GenerationRequest) -> Checkpoint | None: ...

    def check_fits(self, index: int, ids: list[int], params: SamplingParams) -> None: ...


_GREEDY = SamplingParams(temperature=0.0)


@dataclass(eq=False)
class _Row:
    key: Any
    out: RowOutput
    gen: torch.Generator
    checkpoint: Checkpoint | None  # None: the bare base model
    prompt_len: int
    tok_time: float
    start: float
    prefill_start: float = 0.0
    prefill_end: float = 0.0
    token: int = 0  # sampled, not yet fed
    spent: bool = False  # finished, still in the forward pass (hold=True only)


@dataclass
class StepEvent:
    """What one row produced in an admit or a step: streamable text, then a result or an error."""

    key: Any
    delta: str = ""
    result: GenerationResult | None = None
    error: Exception | None = None


@dataclass
class Cancelled:
    key: Any
    tokens_not_generated: int


@dataclass
class DecodeBatch:
    """The rows in flight, whatever checkpoint each uses (or the bare base model): one forward
    pass carries them all, each row with its own checkpoint's router and experts. Not
    thread-safe: one engine thread drives it, each call under the engine's lock."""

    engine: BatchEngine
    use_bem: bool = True  # False: every row runs the bare base model
    hold: bool = False  # finished rows stay in the forward pass until all have finished
    rows: list[_Row] = field(default_factory=list)
    forward: BatchForward | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def admit(self, items: list[tuple[Any, GenerationRequest]]) -> list[StepEvent]:
        """Prefill new rows together and sample their first token; unfinished rows join."""
        eng, events, rows, encoded = self.engine, [], [], []
        for index, (key, req) in enumerate(items):
            t0 = time.perf_counter()
            try:
                ids = eng.encode(req.prompt)
                eng.check_fits(index, ids, req.params)
                ckpt = eng.checkpoint_for(req) if self.use_bem else None
            except (ValueError, KeyError) as exc:  # PromptTooLongError is a ValueError
                events.append(StepEvent(key, error=exc))
                continue
            gen = make_generator(req.params)
            out = RowOutput(eng.tokenizer, req.params, eng.eos_ids)
            rows.append(_Row(key, out, gen, ckpt, len(ids), time.perf_counter() - t0, t0))
            encoded.append(ids)
        if not rows:
            return events
        with eng.lock, torch.inference_mode():
            began = time.perf_counter()
            fwd = BatchForward(eng.model, encoded, eng.pad_id, eng.pool, _groups(rows, eng.device))
            logits = fwd.prefill()[:, -1]
            ended = time.perf_counter()
            for row in rows:
                row.prefill_start, row.prefill_end = began, ended
            keep = _fill_holes(self._staying(rows, self._sample(rows, fwd, logits, events)))
            if len(keep) < len(rows):
                fwd.select(keep)
            if keep:
                if self.forward is None:
                    self.forward = fwd
                else:
                    self.forward.join(fwd)
                self.rows += [rows[i] for i in keep]
        return events

    def step(self) -> list[StepEvent]:
        """Feed every row its last token and sample the next; finished rows leave."""
        if not self.rows:
            return []
        events: list[StepEvent] = []
        with self.engine.lock, torch.inference_mode():
            assert self.forward is not None
            logits = self.forward.step([self.engine.pad_id if r.spent else r.token for r in self.rows],
                                       [not r.spent for r in self.rows])
            self._keep(self._staying(self.rows, self._sample(self.rows, self.forward, logits, events)))
        return events

    def cancel(self, keys: set[Any]) -> list[Cancelled]:
        """Remove rows now (hold=True: they stop generating and leave with the batch); what they
        would still have generated is reported, not computed."""
        gone = [r for r in self.rows if r.key in keys and not r.spent]
        if gone:
            with self.engine.lock, torch.inference_mode():  # rows move within the cache's buffers
                self._keep(self._staying(self.rows, [i for i, r in enumerate(self.rows)
                                                     if r.key not in keys and not r.spent]))
        return [Cancelled(r.key, r.out.params.max_new_tokens - r.out.sampled) for r in gone]

    def _staying(self, rows: list[_Row], going_on: list[int]) -> list[int]:
        """The rows that stay in the forward pass: those that go on, or with hold=True every row
        while any goes on (the others are marked spent)."""
        if not (self.hold and going_on):
            return going_on
        for i in set(range(len(rows))) - set(going_on):
            rows[i].spent = True
        return list(range(len(rows)))

    def _keep(self, keep: list[int]) -> None:
        if len(keep) == len(self.rows):
            return
        keep = _fill_holes(keep)
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.forward = None  # the next row starts a fresh cache
        elif self.forward is not None:
            self.forward.select(keep)

    def _sample(self, rows: list[_Row], fwd: BatchForward, logits: torch.Tensor,
                events: list[StepEvent]) -> list[int]:
        """Pick each row's next token; returns the indices of the rows that go on."""
        logits = logits.float()
        finite = torch.isfinite(logits).all(-1).tolist()
        draws = [not r.spent and finite[i] for i, r in enumerate(rows)]  # the others draw nothing
        tokens = select_tokens(logits, [r.out.params if d else _GREEDY for r, d in zip(rows, draws)],
                               [r.gen for r in rows])
        keep = []
        for i, row in enumerate(rows):
            if row.spent:
                continue
            if not finite[i]:
                events.append(StepEvent(row.key, error=NonFiniteLogitsError(
                    f"the model produced non-finite logits for requests [{i}]")))
                continue
            try:
                row.token = tokens[i]
                delta = row.out.push(row.token)
            except Exception as exc:  # noqa: BLE001 - fails this row, never its neighbours
                events.append(StepEvent(row.key, error=exc))
                continue
            if row.out.done:
                events.append(StepEvent(row.key, delta, result=self._result(i, row, fwd)))
            else:
                if delta:
                    events.append(StepEvent(row.key, delta))
                keep.append(i)
        return keep

    @staticmethod
    def _result(i: int, row: _Row, fwd: BatchForward) -> GenerationResult:
        done = time.perf_counter()
        found = fwd.routing_of(i)
        routing = found[0].finish(found[1], row.prompt_len + row.out.sampled) if found is not None else []
        low = sum(d.used_base_only for d in routing)
        return GenerationResult(
            text=row.out.text,
            prompt_tokens=row.prompt_len,
            completion_tokens=row.out.sampled,
            finish_reason=row.out.finish_reason,
            routing=routing,
            timings={
                "tokenize": row.tok_time,
                "prefill": row.prefill_end - row.prefill_start,
                "decode": done - row.prefill_end,
                "total": done - row.start,
            },
            safety_events={"low_confidence": low} if low else {},
            checkpoint=row.checkpoint.name if row.checkpoint is not None else None,
        )


def _groups(rows: list[_Row], device: torch.device) -> list[RowGroup]:
    """One routing group per cohort of checkpoints among the new rows (bare rows are in none)."""
    cohorts: dict[tuple, tuple[list[Checkpoint], list[int], list[int]]] = {}
    for i, row in enumerate(rows):
        if row.checkpoint is None:
            continue
        ckpts, members, which = cohorts.setdefault(cohort_key(row.checkpoint), ([], [], []))
        if not any(c is row.checkpoint for c in ckpts):
            ckpts.append(row.checkpoint)
        members.append(i)
        which.append(next(k for k, c in enumerate(ckpts) if c is row.checkpoint))
    return [RowGroup(ckpts, RoutingState(ckpts[0].policy, [rows[i].prompt_len for i in members], device),
                     members, which) for ckpts, members, which in cohorts.values()]


def _fill_holes(keep: list[int]) -> list[int]:
    """The rows `keep` (increasing indices), reordered so that a row already in the first
    len(keep) slots stays where it is and the rows beyond them fill the slots of the rows that
    left: the cache then moves one row per leaving row instead of every row after the first."""
    m, kept = len(keep), set(keep)
    order = [j if j in kept else -1 for j in range(m)]
    tail = iter(i for i in keep if i >= m)
    return [j if j >= 0 else next(tail) for j in order]

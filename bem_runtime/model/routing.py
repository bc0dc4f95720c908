"""Chunk-sticky causal routing: one gate per chunk, decided from tokens known before it starts.

chunk 0: mean router probability over the prompt tokens inside chunk 0;
chunk k >= 1: mean over chunk k-1. Top-k of that mean, renormalised; top-1 uses hysteresis.
A decision is never revised, so a full-sequence forward and KV-cached decoding agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .types import RoutingDecision


@dataclass(frozen=True)
class RoutingPolicy:
    num_experts: int
    chunk_size: int
    top_k: int
    hysteresis: float
    temperature: float
    min_confidence: float | None

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float() / self.temperature, dim=-1)

    def decide(self, chunk: int, mean: list[float], previous: int | None) -> RoutingDecision:
        """Pick the chunk's experts from a mean probability vector (ties go to the lower index)."""
        order = sorted(range(self.num_experts), key=lambda e: (-mean[e], e))
        if self.top_k == 1:
            best = order[0]
            keep = previous is not None and mean[best] - mean[previous] <= self.hysteresis
            experts, weights = [previous if keep else best], [1.0]
        else:
            experts = order[: self.top_k]
            total = sum(mean[e] for e in experts)
            weights = [mean[e] / total for e in experts]
        low = self.min_confidence is not None and mean[experts[0]] < self.min_confidence
        start = chunk * self.chunk_size
        return RoutingDecision(chunk, start, start + self.chunk_size, experts, weights, used_base_only=low)


class RoutingState:
    """Per-row routing state of one batch; fed the router probabilities of every forward pass."""

    def __init__(self, policy: RoutingPolicy, prompt_lens: list[int], device: torch.device) -> None:
        self.policy = policy
        self.prompt_lens = prompt_lens
        rows, e = len(prompt_lens), policy.num_experts
        self.next_pos = [0] * rows  # position of the next token each row will feed
        self.chunk_sum = torch.zeros(rows, e, dtype=torch.float64, device=device)  # sum over the open chunk
        self.gate = torch.zeros(rows, e, dtype=torch.float32, device=device)  # gate of the open chunk
        self.decisions: list[list[RoutingDecision]] = [[] for _ in prompt_lens]
        self._step_gate: torch.Tensor | None = None  # [B, 1, E] for decode steps, rebuilt on change

    def _decide(self, row: int, chunk: int, mean: torch.Tensor) -> None:
        history = self.decisions[row]
        previous = history[-1].experts[0] if history else None
        decision = self.policy.decide(chunk, mean.tolist(), previous)
        history.append(decision)
        gate = torch.zeros(self.policy.num_experts, dtype=torch.float32)
        if not decision.used_base_only:
            gate[decision.experts] = torch.tensor(decision.weights, dtype=torch.float32)
        self.gate[row] = gate.to(self.gate.device)
        self._step_gate = None

    def _feed_row(self, row: int, probs: torch.Tensor, out: torch.Tensor) -> None:
        """Feed probs [n, E] of positions next_pos.. of one row; write their gates into out [n, E]."""
        n, size = probs.shape[0], self.policy.chunk_size
        start = self.next_pos[row]
        if start == 0:
            first = min(size, self.prompt_lens[row])
            if n < first:
                raise ValueError("the first forward of a row must contain its whole prompt part of chunk 0")
            self._decide(row, 0, probs[:first].double().mean(0))
        offset = 0
        while offset < n:
            pos = start + offset
            chunk = pos // size
            if pos % size == 0 and pos > 0:  # chunk k starts: chunk k-1 is complete
                self._decide(row, chunk, self.chunk_sum[row] / size)
                self.chunk_sum[row].zero_()
            take = min(n - offset, (chunk + 1) * size - pos)
            self.chunk_sum[row] += probs[offset : offset + take].double().sum(0)
            out[offset : offset + take] = self.gate[row]
            offset += take
        self.next_pos[row] = start + n

    def feed(self, probs: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Router probs [B, T, E] of one forward; row b's real tokens are its last counts[b] columns.

        Returns the dense gate [B, T, E] (zeros on padding and on rows fed nothing).
        """
        gates = torch.zeros_like(probs, dtype=torch.float32)
        width = probs.shape[1]
        if width == 1 and all(c <= 1 for c in counts) and all(p > 0 for p, c in zip(self.next_pos, counts) if c):
            return self._feed_single(probs, counts)
        for row, n in enumerate(counts):
            if n:
                self._feed_row(row, probs[row, width - n :], gates[row, width - n :])
        return gates

    def _feed_single(self, probs: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Decode step fast path: one token per active row, no per-row work unless a chunk starts."""
        size = self.policy.chunk_size
        active = [row for row, c in enumerate(counts) if c]
        for row in active:
            if self.next_pos[row] % size == 0:
                self._decide(row, self.next_pos[row] // size, self.chunk_sum[row] / size)
                self.chunk_sum[row].zero_()
            self.next_pos[row] += 1
        if len(active) == len(counts):
            self.chunk_sum.add_(probs[:, 0])
        else:
            idx = torch.tensor(active, device=probs.device)
            self.chunk_sum.index_add_(0, idx, probs[idx, 0].double())
        # Finished rows keep their last gate: their outputs are never read. The same tensor object
        # is returned until a decision changes it, so callers may cache what they derive from it.
        if self._step_gate is None:
            self._step_gate = self.gate.unsqueeze(1).clone()
        return self._step_gate

    def uniform(self, counts: list[int]) -> bool:
        """Whether every row fed in this forward currently has the same gate."""
        current = [self.decisions[row][-1] for row, n in enumerate(counts) if n and self.decisions[row]]
        key = [(d.experts, d.weights, d.used_base_only) for d in current]
        return len(current) == sum(1 for n in counts if n) and all(k == key[0] for k in key)

    def finish(self, row: int, total_len: int) -> list[RoutingDecision]:
        """Decisions covering positions [0, total_len), ends clipped; decides a chunk whose first
        token was generated but never fed (its gate is fully determined by the previous chunk)."""
        size = self.policy.chunk_size
        if total_len > self.next_pos[row] and self.next_pos[row] % size == 0 and self.next_pos[row] > 0:
            self._decide(row, self.next_pos[row] // size, self.chunk_sum[row] / size)
            self.chunk_sum[row].zero_()
        return [
            RoutingDecision(d.chunk, d.start, min(d.end, total_len), list(d.experts), list(d.weights), d.used_base_only)
            for d in self.decisions[row]
            if d.start < total_len
        ]

    def select(self, keep: list[int]) -> None:
        """Keep only these rows (continuous batching: the others left the batch)."""
        idx = torch.tensor(keep, dtype=torch.long, device=self.gate.device)
        self.prompt_lens = [self.prompt_lens[i] for i in keep]
        self.next_pos = [self.next_pos[i] for i in keep]
        self.decisions = [self.decisions[i] for i in keep]
        self.chunk_sum, self.gate = self.chunk_sum[idx], self.gate[idx]
        self._step_gate = None

    def join(self, other: RoutingState) -> None:
        """Append another batch's rows; each row's state is its own, so nothing else changes."""
        self.prompt_lens = self.prompt_lens + other.prompt_lens
        self.next_pos = self.next_pos + other.next_pos
        self.decisions = self.decisions + other.decisions
        self.chunk_sum = torch.cat([self.chunk_sum, other.chunk_sum])
        self.gate = torch.cat([self.gate, other.gate])
        self._step_gate = None

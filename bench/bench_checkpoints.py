"""Many BEM checkpoints on one base model, one run, side by side (issue 18):

  (a) throughput at concurrency 8 and 32 of a load spread over 8 checkpoints vs the same load on
      one checkpoint (target >= 0.9x); the two closed loops take turns a decode iteration at a
      time, so drift hits both alike;
  (b) hot-load time per checkpoint (read, validate, govern, install) at two model sizes (the
      test toy and --load-size, default medium);
  (c) memory per resident checkpoint vs the base model (what the checkpoint's tensors take on the
      device; on CUDA also the allocator's growth while loading);
  (d) p50 time per token at concurrency 1 with 8 checkpoints resident vs 1 (target <= 1.03x),
      alternating.

Throughput and latency are measured in-process on the engine's continuous batch (what the
scheduler thread runs), so HTTP noise does not hide the engine's cost. EOS is ignored so every
request generates exactly --tokens tokens.

    python bench/bench_checkpoints.py --device auto --size small --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_runtime_serving import SIZES, device_name, write_model

from bem_runtime.model import Engine, GenerationRequest, SamplingParams
from bem_runtime.model.toy import write_toy_assets, write_variant

CHECKPOINTS = 8
PROMPT = "Request {i}: the quick brown fox jumps over the lazy dog."


def _assets(tmp: Path, size: str) -> tuple[Path, Path, list[Path]]:
    """A base model, its checkpoint, and CHECKPOINTS - 1 others of the same shapes."""
    base, bem = write_toy_assets(tmp / size) if size == "toy" else write_model(tmp / size, size)
    others = [write_variant(bem, tmp / size / f"variant-{k}", seed=k + 1) for k in range(CHECKPOINTS - 1)]
    return base, bem, others


def _request(i: int, tokens: int, checkpoint: str) -> GenerationRequest:
    params = SamplingParams(max_new_tokens=tokens, temperature=0.8, seed=i)
    return GenerationRequest(PROMPT.format(i=i), params, checkpoint=checkpoint)


class ClosedLoop:
    """`concurrency` rows in flight on one batch; a finished row is replaced at once (as the
    scheduler does: a step, then the new rows' prefill). Request i uses names[i % n]. It runs an
    iteration at a time, so that two loops can take turns and drift hits both alike."""

    def __init__(self, engine: Engine, concurrency: int, total: int, tokens: int, names: list[str]) -> None:
        self.batch, self.tokens, self.names = engine.open_batch(), tokens, names
        self.pending = list(range(total))
        self.generated, self.seconds = 0, 0.0
        start = time.perf_counter()
        self.events = self._admit(concurrency)
        self.seconds += time.perf_counter() - start

    def _admit(self, n: int) -> list:
        new, self.pending = self.pending[:n], self.pending[n:]
        reqs = [(i, _request(i, self.tokens, self.names[i % len(self.names)])) for i in new]
        return self.batch.admit(reqs) if reqs else []

    def advance(self) -> bool:
        """One iteration (a step, then the prefill of the rows replacing those that finished);
        False once every request has finished."""
        ended = 0
        for ev in self.events:
            if ev.error is not None:
                raise ev.error
            if ev.result is not None:
                self.generated += ev.result.completion_tokens
                ended += 1
        if not (self.batch or self.pending):
            return False
        start = time.perf_counter()
        self.events = self.batch.step() + self._admit(ended)
        self.seconds += time.perf_counter() - start
        return True

    @property
    def tokens_per_s(self) -> float:
        return self.generated / self.seconds


def take_turns(loops: list[ClosedLoop]) -> None:
    """Run the loops to their end an iteration each in turn (who goes first alternates)."""
    active, turn = list(loops), 0
    while active:
        order = active if turn % 2 == 0 else active[::-1]
        done = [loop for loop in order if not loop.advance()]
        active = [loop for loop in active if loop not in done]
        turn += 1


def throughput(engine: Engine, names: list[str], args) -> dict:
    """Spread over every checkpoint vs on one, the two closed loops taking turns an iteration at
    a time; a mode's rate is its tokens over the time of its own iterations."""
    out = {}
    for c in (8, 32):
        spread, single = [], []
        for _ in range(args.rounds):
            loops = [ClosedLoop(engine, c, args.requests, args.tokens, n) for n in (names, names[:1])]
            take_turns(loops)
            spread.append(loops[0].tokens_per_s)
            single.append(loops[1].tokens_per_s)
        s, o = statistics.median(spread), statistics.median(single)
        out[str(c)] = {"spread_tokens_per_s": s, "single_tokens_per_s": o, "ratio": s / o}
    return out


def per_token_latency(engine: Engine, others: list, args) -> dict:
    """p50 decode time per token of one request alone, 8 resident vs 1 (same engine: the other
    seven are removed and put back between runs; loading them is not timed)."""
    times: dict[str, list[float]] = {"resident_8": [], "resident_1": []}
    req = _request(0, args.tokens, engine.default)
    for _ in range(args.latency_runs):
        for mode in ("resident_8", "resident_1"):
            for ckpt in others:
                if mode == "resident_8":
                    engine.add_checkpoint(ckpt)
                else:
                    engine.checkpoints.pop(ckpt.name, None)  # as DELETE does, without the lock dance
            r = engine.generate_batch([req])[0]
            times[mode].append(r.timings["decode"] / max(r.completion_tokens - 1, 1))
    for ckpt in others:
        engine.add_checkpoint(ckpt)
    p8, p1 = statistics.median(times["resident_8"]), statistics.median(times["resident_1"])
    return {"resident_8_ms": p8 * 1e3, "resident_1_ms": p1 * 1e3, "ratio": p8 / p1}


def load_times(engine: Engine, others: list[Path]) -> dict:
    seconds = []
    for k, path in enumerate(others):
        start = time.perf_counter()
        engine.load_checkpoint(f"load-{k}", path)
        seconds.append(time.perf_counter() - start)
    return {"p50_s": statistics.median(seconds), "max_s": max(seconds)}


def memory(engine: Engine, path: Path) -> dict:
    base = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    cuda = engine.device.type == "cuda"
    before = torch.cuda.memory_allocated(engine.device) if cuda else 0
    ckpt = engine.load_checkpoint("memory-probe", path)
    out = {"base_bytes": base, "checkpoint_bytes": ckpt.nbytes, "ratio": ckpt.nbytes / base}
    if cuda:
        out["cuda_allocated_growth_bytes"] = torch.cuda.memory_allocated(engine.device) - before
    engine.remove_checkpoint("memory-probe")
    return out


def load_section(tmp: Path, size: str, device: str) -> dict:
    base, bem, others = _assets(tmp, size)
    start = time.perf_counter()
    engine = Engine.load(base, bem, device=device)
    base_s = time.perf_counter() - start
    return {"base_load_s": base_s, **load_times(engine, others), "memory": memory(engine, others[0])}


def run(args, tmp: Path) -> dict:
    base, bem, others = _assets(tmp, args.size)
    engine = Engine.load(base, bem, name="c0", device=args.device)
    engine.eos_ids = set()  # fixed-length generations
    for k, path in enumerate(others):
        engine.load_checkpoint(f"c{k + 1}", path)
    names = sorted(engine.checkpoints)
    take_turns([ClosedLoop(engine, 8, 16, args.tokens, names)])  # warm-up: allocations, kernels
    print(f"device: {device_name(engine)}; model: {args.size}; {CHECKPOINTS} checkpoints; "
          f"{args.tokens} new tokens per request", flush=True)
    report = {"device": device_name(engine), "size": args.size, "tokens": args.tokens,
              "throughput": throughput(engine, names, args),
              "latency": per_token_latency(engine, [engine.checkpoints[n] for n in names[1:]], args),
              "load": {size: load_section(tmp, size, args.device) for size in ("toy", args.load_size)}}
    return report


def print_report(r: dict) -> None:
    print("\n| concurrency | 8 checkpoints tok/s | 1 checkpoint tok/s | ratio (target >= 0.9) |")
    print("|---|---|---|---|")
    for c, v in r["throughput"].items():
        print(f"| {c} | {v['spread_tokens_per_s']:.0f} | {v['single_tokens_per_s']:.0f} | {v['ratio']:.3f} |")
    lat = r["latency"]
    print(f"\np50 per token at concurrency 1: {lat['resident_8_ms']:.2f} ms with 8 resident vs "
          f"{lat['resident_1_ms']:.2f} ms with 1: {lat['ratio']:.3f}x (target <= 1.03x)")
    print("\n| size | base load s | checkpoint hot-load p50 s | max s | checkpoint / base memory |")
    print("|---|---|---|---|---|")
    for size, v in r["load"].items():
        m = v["memory"]
        print(f"| {size} | {v['base_load_s']:.2f} | {v['p50_s']:.3f} | {v['max_s']:.3f} | "
              f"{m['checkpoint_bytes'] / 2**20:.2f} MiB / {m['base_bytes'] / 2**20:.1f} MiB = {m['ratio']:.3%} |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--size", choices=("toy", *SIZES), default="small", help="model of (a) and (d)")
    p.add_argument("--load-size", choices=tuple(SIZES), default="medium", help="second size of (b), (c)")
    p.add_argument("--tokens", type=int, default=32, help="new tokens per request")
    p.add_argument("--requests", type=int, default=64, help="requests per throughput round")
    p.add_argument("--rounds", type=int, default=5, help="rounds per concurrency (median)")
    p.add_argument("--latency-runs", type=int, default=31)
    p.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bem-bench-ckpt-") as tmp:
        report = run(args, Path(tmp))
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark of bem_runtime, one run, one machine, every mode timed interleaved (rounds
alternate between servers, so drift hits all of them alike):

  (a) mixed-length workload (8 to 256 new tokens, log-uniform; Poisson arrivals at several
      rates; streamed): throughput, p50/p99 time to first token, p50 inter-token latency,
      continuous vs static batching (issue 11 target: continuous >= 1.5x static throughput).
      "static" is the batcher continuous batching replaced: a batch is admitted when the engine
      is idle and every row stays in the forward pass until the longest ends. "static-leave"
      admits the same way but drops finished rows, which splits the gain into its two parts
      (rows leaving, rows joining);
  (b) a short request alone vs beside long ones (continuous: about the same latency);
  (c) closed-loop throughput at concurrency 1, 8, 32: continuous, static, unbatched
      (continuous at concurrency 1 >= 0.97x unbatched). At concurrency 1 the three servers run
      the same code (one row in flight; --max-batch-size only caps admission), so that ratio
      shows the measurement's noise: the modes take turns request by request, each one's rate
      is its tokens over its median request time, and the ratio is the median of the paired
      per-request ratios, so a burst of load from elsewhere on a shared machine, or a slow
      request, hits every mode alike;
  (d) p50 latency of one request over HTTP vs direct in-process `engine.generate_batch`;
  (e) where a decode step's time goes, in-process at 1, 8 and 32 rows: wall time per step, the
      device's busy time (torch.profiler's kernel time on CUDA), and the Python functions that
      take the most host time (cProfile). A step whose wall time is far above its device time
      is host-bound: that is what the CUDA run showed at 32 rows and what this section pins.

The model is random but larger than the test toy, so matmuls dominate. The HTTP server is a real
`bem-runtime serve` child process on 127.0.0.1 (clients here do not share its GIL); "direct" is
`engine.generate_batch` on a copy of the model loaded in this process.

    python bench/bench_runtime_serving.py --device auto --size medium --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import torch
from bem_runtime.model import Engine, GenerationRequest, SamplingParams
from bem_runtime.model import toy
from devcluster.processes import free_port

# hidden, intermediate, layers, heads, kv heads
SIZES = {"small": (256, 688, 4, 4, 2), "medium": (512, 1376, 8, 8, 4),
         "large": (1024, 2752, 12, 16, 8), "xl": (2048, 5504, 16, 16, 8)}
CONCURRENCY = (1, 8, 32)


def write_model(out: Path, size: str, seed: int = 0) -> tuple[Path, Path]:
    """A random Llama of the chosen size plus a matching BEM checkpoint (toy's recipe, scaled)."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, inter, layers, heads, kv = SIZES[size]
    tokenizer = toy.build_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=inter,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv, max_position_embeddings=1024,
                      initializer_range=0.02, tie_word_embeddings=False,
                      bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    bem_cfg = {**toy.bem_config("llama"), "layers": list(range(1, layers))}
    tensors = toy.build_experts(model, tokenizer, bem_cfg)
    base, bem = out / "base", out / "bem"
    base.mkdir(parents=True)
    bem.mkdir(parents=True)
    model.save_pretrained(base, safe_serialization=True)
    tokenizer.save_pretrained(base)
    (bem / toy.CONFIG_FILE).write_text(json.dumps(bem_cfg, indent=2), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(bem / toy.TENSORS_FILE))
    return base, bem


def device_name(engine: Engine) -> str:
    dev = torch.device(engine.device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def _body(i: int, tokens: int) -> dict:
    return {"prompt": f"Request {i}: the quick brown fox jumps over the lazy dog.",
            "max_new_tokens": tokens, "seed": i, "temperature": 0.8}


def _start_server(base: Path, bem: Path, device: str, batch: int, port: int,
                  log: Path, batching: str = "continuous") -> subprocess.Popen:
    """A real `bem-runtime serve` process: clients here do not share its GIL or event loop."""
    cmd = [sys.executable, "-m", "bem_runtime", "serve", "--model-dir", str(base), "--bem-dir",
           str(bem), "--device", device, "--port", str(port), "--max-batch-size", str(batch),
           "--max-queue", "4096", "--rate-limit", "1000000", "--rate-limit-burst", "1000000",
           "--max-new-tokens-limit", "4096", "--log-level", "warning", "--batching", batching]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


async def _generate(session: aiohttp.ClientSession, url: str, body: dict) -> int:
    """One plain request; the tokens it generated."""
    async with session.post(url, json=body) as r:
        data = await r.json()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {data}")
        return data["usage"]["completion_tokens"]


async def _throughput(url: str, concurrency: int, total: int, tokens: int) -> dict:
    """Closed loop: `concurrency` clients, each sending its next request when one returns."""
    queue = list(range(total))
    done_tokens = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done_tokens
        while queue:
            made = await _generate(session, url, _body(queue.pop(), tokens))
            done_tokens += made  # after the await: `x += await f()` reads x before awaiting

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"requests": total, "seconds": wall, "tokens_per_s": done_tokens / wall,
            "requests_per_s": total / wall}


async def _one_at_a_time(urls: dict[str, str], n: int, tokens: int) -> dict:
    """Concurrency 1: the modes take turns request by request, each sent the same n requests;
    a mode's rate is its tokens over its median request time."""
    times: dict[str, list[float]] = {m: [] for m in urls}
    made: dict[str, list[int]] = {m: [] for m in urls}
    modes = list(urls)
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            for mode in modes[i % len(modes):] + modes[:i % len(modes)]:
                start = time.perf_counter()
                made[mode].append(await _generate(session, urls[mode], _body(i, tokens)))
                times[mode].append(time.perf_counter() - start)
    out = {}
    for mode in modes:
        t = statistics.median(times[mode])
        out[mode] = {"tokens_per_s": statistics.median(made[mode]) / t, "requests_per_s": 1 / t}
        if "unbatched" in times:
            # Paired: request i took turns in every mode back to back, so the median of the
            # per-request ratios leaves out what differs between requests and slow drift.
            out[mode]["vs_unbatched_paired"] = statistics.median(
                (u / n_u) / (m / n_m) for u, n_u, m, n_m in
                zip(times["unbatched"], made["unbatched"], times[mode], made[mode]))
    return out


async def _latency(url: str, engine: Engine, n: int, tokens: int) -> dict:
    """p50 of the same request over HTTP and in-process, interleaved so drift hits both."""
    b = _body(0, tokens)
    req = GenerationRequest(b["prompt"], SamplingParams(max_new_tokens=tokens, seed=b["seed"],
                                                        temperature=b["temperature"]))
    http, direct = [], []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            start = time.perf_counter()
            async with session.post(url, json=b) as r:
                await r.read()
                assert r.status == 200
            http.append(time.perf_counter() - start)
            start = time.perf_counter()
            engine.generate_batch([req])  # blocks this loop on purpose: nothing else runs here
            direct.append(time.perf_counter() - start)
    h, d = statistics.median(http), statistics.median(direct)
    return {"http_p50_s": h, "direct_p50_s": d, "ratio": h / d, "overhead_ms": (h - d) * 1e3}


def _step_rows(engine: Engine, rows: int, steps: int) -> Any:
    """A batch of `rows` rows, prefilled, each with room for more than `steps` steps."""
    batch = engine.open_batch(True)
    batch.admit([(i, GenerationRequest(_body(i, 0)["prompt"], SamplingParams(
        max_new_tokens=steps + 8, seed=i, temperature=0.8))) for i in range(rows)])
    return batch


def _sync(engine: Engine) -> None:
    if torch.device(engine.device).type == "cuda":
        torch.cuda.synchronize(engine.device)


def _step_profile(engine: Engine, steps: int = 40, top: int = 8) -> dict:
    """Decode-step wall time at 1, 8, 32 rows; device busy time; the top host functions at 32."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(engine.device).type == "cuda"
    out: dict = {"rows": {}, "top_host_functions": []}
    for rows in (1, 8, 32):
        batch = _step_rows(engine, rows, steps)
        _sync(engine)
        start = time.perf_counter()
        for _ in range(steps):
            batch.step()
        _sync(engine)
        wall = (time.perf_counter() - start) / steps
        entry = {"wall_ms": wall * 1e3}
        if cuda:
            batch = _step_rows(engine, rows, steps)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(steps):
                    batch.step()
                _sync(engine)
            busy = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3 / steps
            entry["device_busy_ms"] = busy
        out["rows"][str(rows)] = entry
        print(f"  steps {rows:2d} rows: {wall * 1e3:7.2f} ms/step wall"
              + (f", device busy {entry['device_busy_ms']:.2f} ms" if cuda else ""), flush=True)
    batch = _step_rows(engine, 32, steps)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        batch.step()
    _sync(engine)
    prof.disable()
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, callers)}
    ranked = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    for (file, line, name), (_, calls, own, _cum, _) in ranked:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else "builtin"
        out["top_host_functions"].append({"function": f"{name} ({where})", "calls_per_step": calls / steps,
                                          "own_ms_per_step": own * 1e3 / steps})
    return out


def _engine_ceiling(engine: Engine, n: int, tokens: int) -> float:
    """Tokens/s of one in-process batch of n over n requests one by one (no HTTP, no queue)."""
    reqs = [GenerationRequest(_body(i, tokens)["prompt"],
                              SamplingParams(max_new_tokens=tokens, seed=i, temperature=0.8))
            for i in range(n)]
    start = time.perf_counter()
    one = sum(engine.generate_batch([r])[0].completion_tokens for r in reqs)
    t_one = time.perf_counter() - start
    start = time.perf_counter()
    many = sum(r.completion_tokens for r in engine.generate_batch(reqs))
    return (many / (time.perf_counter() - start)) / (one / t_one)


MODES = ("continuous", "static", "static-leave", "unbatched")
MIXED_MODES = MODES[:3]
CONCURRENCY_MODES = ("continuous", "static", "unbatched")
SECTIONS = ("mixed", "short", "concurrency", "latency", "engine", "steps")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] if ordered else 0.0


async def _stream_one(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    """One streamed request: time to the first token event, gaps between token events."""
    start = time.perf_counter()
    stamps: list[float] = []
    tokens = 0
    async with session.post(url, json={**body, "stream": True}) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
        async for raw in r.content:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "token":
                stamps.append(time.perf_counter())
            elif event["type"] == "done":
                tokens = event["usage"]["completion_tokens"]
    end = time.perf_counter()
    return {"ttft": (stamps[0] if stamps else end) - start, "latency": end - start,
            "gaps": [b - a for a, b in zip(stamps, stamps[1:])], "tokens": tokens}


def _mixed_workload(n: int, rate: float, seed: int) -> list[tuple[float, dict]]:
    """(delay before sending, body): lengths 8..256 log-uniform, exponential inter-arrivals."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tokens = int(round(math.exp(rng.uniform(math.log(8), math.log(256)))))
        out.append((rng.expovariate(rate), _body(1000 + i, tokens)))
    return out


async def _mixed(url: str, workload: list[tuple[float, dict]]) -> dict:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        tasks = []
        for delay, body in workload:
            await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_stream_one(session, url, body)))
        done = await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    gaps = [g for d in done for g in d["gaps"]]
    ttft = [d["ttft"] for d in done]
    return {"seconds": wall, "tokens": sum(d["tokens"] for d in done),
            "tokens_per_s": sum(d["tokens"] for d in done) / wall,
            "ttft_p50_s": _pct(ttft, 0.5), "ttft_p99_s": _pct(ttft, 0.99),
            "itl_p50_s": _pct(gaps, 0.5)}


async def _short_beside_long(url: str, runs: int) -> dict:
    """p50 latency of an 8-token request alone, and sent while 4 requests of 256 tokens run."""
    short = _body(7, 8)
    alone, beside = [], []
    async with aiohttp.ClientSession() as session:
        for i in range(runs):
            alone.append((await _stream_one(session, url, short))["latency"])
            longs = [asyncio.create_task(_stream_one(session, url, _body(2000 + 4 * i + k, 256)))
                     for k in range(4)]
            await asyncio.sleep(0.05)
            beside.append((await _stream_one(session, url, short))["latency"])
            await asyncio.gather(*longs)
    a, b = statistics.median(alone), statistics.median(beside)
    return {"alone_p50_s": a, "beside_long_p50_s": b, "ratio": b / a}


async def _closed_loop_level(urls: dict[str, str], c: int, args: argparse.Namespace) -> dict:
    """Closed-loop throughput of each mode at concurrency c, rounds interleaved; medians."""
    total = max(args.rounds * c, 8)
    acc: dict[str, list[dict]] = {m: [] for m in CONCURRENCY_MODES}
    for rnd in range(args.rounds):
        for mode in CONCURRENCY_MODES[rnd % 3:] + CONCURRENCY_MODES[:rnd % 3]:
            acc[mode].append(await _throughput(urls[mode], c, total, args.tokens))
    return {mode: {"tokens_per_s": statistics.median(x["tokens_per_s"] for x in runs),
                   "requests_per_s": statistics.median(x["requests_per_s"] for x in runs)}
            for mode, runs in acc.items()}


async def run(engine: Engine, base: Path, bem: Path, args: argparse.Namespace,
              logs: Path) -> dict:
    results: dict = {"throughput": {}, "mixed": {}, "short_beside_long": {}, "latency": {}}
    servers, urls = {}, {}
    try:
        wanted = {*(MIXED_MODES if "mixed" in args.sections else ()),
                  *(CONCURRENCY_MODES if "concurrency" in args.sections else ()),
                  *(("continuous", "static") if "short" in args.sections else ()), "continuous"}
        for mode in (m for m in MODES if m in wanted):
            port = free_port()
            batch = 1 if mode == "unbatched" else args.max_batch_size
            servers[mode] = _start_server(base, bem, args.device, batch, port, logs / f"{mode}.log",
                                          "continuous" if mode == "unbatched" else mode)
            urls[mode] = f"http://127.0.0.1:{port}/v1/generate"
            await _throughput(urls[mode], 2, 4, args.tokens)  # warm the path
        for rate in args.rates if "mixed" in args.sections else ():
            workload = _mixed_workload(args.mixed_requests, rate, seed=int(rate * 1000))
            acc: dict[str, list[dict]] = {m: [] for m in MIXED_MODES}
            for rnd in range(args.rounds):
                for mode in MIXED_MODES[rnd % 3:] + MIXED_MODES[:rnd % 3]:
                    acc[mode].append(await _mixed(urls[mode], workload))
            row = {m: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
                   for m, runs in acc.items()}
            row["speedup"] = row["continuous"]["tokens_per_s"] / row["static"]["tokens_per_s"]
            row["speedup_vs_leave"] = (row["continuous"]["tokens_per_s"]
                                       / row["static-leave"]["tokens_per_s"])
            results["mixed"][str(rate)] = row
            for m in MIXED_MODES:
                v = row[m]
                print(f"  mixed {rate:5.1f} req/s {m:10s}: {v['tokens_per_s']:8.1f} tok/s, TTFT p50 "
                      f"{v['ttft_p50_s'] * 1e3:7.1f} ms p99 {v['ttft_p99_s'] * 1e3:7.1f} ms, ITL p50 "
                      f"{v['itl_p50_s'] * 1e3:6.1f} ms", flush=True)
        for mode in ("continuous", "static") if "short" in args.sections else ():
            results["short_beside_long"][mode] = await _short_beside_long(urls[mode], args.short_runs)
        for c in CONCURRENCY if "concurrency" in args.sections else ():
            if c == 1:
                level = await _one_at_a_time({m: urls[m] for m in CONCURRENCY_MODES},
                                             args.single_requests, args.tokens)
            else:
                level = await _closed_loop_level(urls, c, args)
            results["throughput"][str(c)] = level
            for mode, r in level.items():
                print(f"  {mode:10s} concurrency {c:2d}: {r['tokens_per_s']:9.1f} tok/s", flush=True)
        if "latency" in args.sections:
            results["latency"] = await _latency(urls["continuous"], engine, args.latency_runs, args.tokens)
    finally:
        for proc in servers.values():
            proc.terminate()
            proc.wait(60)
    results["speedup"] = {c: v["continuous"].get("vs_unbatched_paired",
                                                 v["continuous"]["tokens_per_s"]
                                                 / v["unbatched"]["tokens_per_s"])
                          for c, v in results["throughput"].items()}
    if "engine" in args.sections:
        results["engine_batch32_speedup"] = _engine_ceiling(engine, 32, args.tokens)
    if "steps" in args.sections:
        results["steps"] = _step_profile(engine)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--size", choices=tuple(SIZES), default="medium",
                   help="random model size: " + ", ".join(f"{k}={v[0]}x{v[2]}L"
                                                          for k, v in SIZES.items()))
    p.add_argument("--model-dir", type=Path, help="use this base model instead of a random one")
    p.add_argument("--bem-dir", type=Path, help="BEM checkpoint for --model-dir")
    p.add_argument("--tokens", type=int, default=16, help="max_new_tokens per request")
    p.add_argument("--rounds", type=int, default=2,
                   help="interleaved rounds per mode (and requests per client per level)")
    p.add_argument("--rates", type=float, nargs="+", default=[4.0, 16.0, 64.0],
                   help="mixed workload: arrival rates, requests/s")
    p.add_argument("--mixed-requests", type=int, default=96,
                   help="mixed workload: requests per rate (enough that the last long request's "
                        "tail does not decide the throughput)")
    p.add_argument("--single-requests", type=int, default=60,
                   help="concurrency 1: requests per mode, the modes taking turns")
    p.add_argument("--short-runs", type=int, default=3, help="short-beside-long repetitions")
    p.add_argument("--latency-runs", type=int, default=15)
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                   help="parts to run (default: all): mixed workload, short beside long, "
                        "concurrency sweep, HTTP vs direct latency, engine batch ceiling, "
                        "where a decode step's time goes")
    p.add_argument("--json", type=Path, help="write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bem-bench-") as tmp:
        return _bench(args, Path(tmp))


def _bench(args: argparse.Namespace, tmp: Path) -> int:
    if args.model_dir:
        base, bem = args.model_dir, args.bem_dir
    else:
        base, bem = write_model(tmp, args.size)
    engine = Engine.load(base, bem, device=args.device)
    engine.warmup()
    for i in range(3):  # first calls pay for allocator growth and kernel selection
        engine.generate_batch([GenerationRequest("warm", SamplingParams(max_new_tokens=args.tokens,
                                                                         seed=i))] * 8)
    name = device_name(engine)
    params = sum(p.numel() for p in engine.model.parameters())
    print(f"device: {name}; model: {args.size} ({params / 1e6:.1f}M params); "
          f"{args.tokens} new tokens per request", flush=True)
    results = asyncio.run(run(engine, base, bem, args, tmp))
    _print_summary(results)
    report = {"device": name, "size": args.size, "params": params, "tokens": args.tokens,
              "python": sys.version.split()[0], "torch": torch.__version__, **results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


def _print_summary(results: dict) -> None:
    if results["mixed"]:
        _print_mixed_table(results["mixed"])
    _print_rest(results)


def _print_mixed_table(mixed: dict) -> None:
    print("\n| workload | static tok/s | static-leave tok/s | continuous tok/s | vs static | "
          "vs static-leave | TTFT p50 s/c (ms) | TTFT p99 s/c (ms) | ITL p50 s/c (ms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rate, row in mixed.items():
        s, sl, c = row["static"], row["static-leave"], row["continuous"]
        print(f"| mixed 8-256 tok, {float(rate):g} req/s | {s['tokens_per_s']:.0f} | "
              f"{sl['tokens_per_s']:.0f} | {c['tokens_per_s']:.0f} | {row['speedup']:.2f}x | "
              f"{row['speedup_vs_leave']:.2f}x | {s['ttft_p50_s'] * 1e3:.0f} / {c['ttft_p50_s'] * 1e3:.0f} | "
              f"{s['ttft_p99_s'] * 1e3:.0f} / {c['ttft_p99_s'] * 1e3:.0f} | "
              f"{s['itl_p50_s'] * 1e3:.1f} / {c['itl_p50_s'] * 1e3:.1f} |")
    best = max(row["speedup"] for row in mixed.values())
    print(f"continuous vs static on the mixed workload, best rate: {best:.2f}x "
          f"(target >= 1.5x: {'met' if best >= 1.5 else 'NOT met'})")


def _print_rest(results: dict) -> None:
    for mode, v in results["short_beside_long"].items():
        print(f"{mode:10s}: 8-token request alone {v['alone_p50_s'] * 1e3:.0f} ms, beside 4x256-token "
              f"requests {v['beside_long_p50_s'] * 1e3:.0f} ms ({v['ratio']:.2f}x)")
    for c, v in results["throughput"].items():
        print(f"concurrency {c:>2}: " + ", ".join(f"{m} {v[m]['tokens_per_s']:.0f}" for m in CONCURRENCY_MODES)
              + f" tok/s; continuous/unbatched {results['speedup'][c]:.2f}x")
    if "1" in results["speedup"]:
        one = results["speedup"]["1"]
        print(f"concurrency 1, continuous vs unbatched (paired): {one:.3f}x (target >= 0.97x: "
              f"{'met' if one >= 0.97 else 'NOT met'})")
    if lat := results["latency"]:
        print(f"HTTP p50 {lat['http_p50_s'] * 1e3:.1f} ms vs direct p50 {lat['direct_p50_s'] * 1e3:.1f}"
              f" ms: ratio {lat['ratio']:.3f} (+{lat['overhead_ms']:.1f} ms)")
    if "engine_batch32_speedup" in results:
        print(f"engine alone, one batch of 32 vs 32 one by one: {results['engine_batch32_speedup']:.2f}x")
    if steps := results.get("steps"):
        for rows, v in steps["rows"].items():
            busy = f", device busy {v['device_busy_ms']:.2f} ms" if "device_busy_ms" in v else ""
            print(f"decode step, {rows:>2} rows: {v['wall_ms']:.2f} ms wall{busy}")
        print("host time per 32-row step, top functions (own time):")
        for f in steps["top_host_functions"]:
            print(f"  {f['own_ms_per_step']:7.3f} ms  {f['calls_per_step']:6.1f} calls  {f['function']}")


if __name__ == "__main__":
    sys.exit(main())

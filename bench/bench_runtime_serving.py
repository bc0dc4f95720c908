"""Serving benchmark of bem_runtime (issue 4, bench parts b and c), one run, one machine:

  (b) throughput (completion tokens/s) at concurrency 1, 8, 32 with dynamic batching
      vs batching off (--max-batch-size 1); target >= 4x at 32;
  (c) p50 latency of one request over HTTP vs direct in-process `engine.generate_batch`.

The model is random but larger than the test toy, so matmuls dominate. The HTTP server is a real
`bem-runtime serve` child process on 127.0.0.1 (clients here do not share its GIL); "direct" is
`engine.generate_batch` on a copy of the model loaded in this process.

    python bench/bench_runtime_serving.py --device auto --size medium --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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
                  log: Path) -> subprocess.Popen:
    """A real `bem-runtime serve` process: clients here do not share its GIL or event loop."""
    cmd = [sys.executable, "-m", "bem_runtime", "serve", "--model-dir", str(base), "--bem-dir",
           str(bem), "--device", device, "--port", str(port), "--max-batch-size", str(batch),
           "--max-queue", "4096", "--rate-limit", "1000000", "--rate-limit-burst", "1000000",
           "--max-new-tokens-limit", "4096", "--log-level", "warning"]
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


def _batch_stats(port: int) -> tuple[float, float]:
    """(sum, count) of the server's bem_batch_size histogram."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines()
                  if line.startswith(("bem_batch_size_sum", "bem_batch_size_count")))
    return float(values.get("bem_batch_size_sum", 0)), float(values.get("bem_batch_size_count", 0))


async def _throughput(url: str, concurrency: int, total: int, tokens: int) -> dict:
    """Closed loop: `concurrency` clients, each sending its next request when one returns."""
    queue = list(range(total))
    done_tokens = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal done_tokens
        while queue:
            i = queue.pop()
            async with session.post(url, json=_body(i, tokens)) as r:
                data = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}: {data}")
                done_tokens += data["usage"]["completion_tokens"]

    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"requests": total, "seconds": wall, "tokens_per_s": done_tokens / wall,
            "requests_per_s": total / wall}


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


async def run(engine: Engine, base: Path, bem: Path, args: argparse.Namespace,
              logs: Path) -> dict:
    results: dict = {"throughput": {}, "latency": {}}
    for label, batch in (("batched", args.max_batch_size), ("unbatched", 1)):
        port = free_port()
        proc = _start_server(base, bem, args.device, batch, port, logs / f"{label}.log")
        url = f"http://127.0.0.1:{port}/v1/generate"
        try:
            await _throughput(url, 2, 4, args.tokens)  # warm the path
            for c in CONCURRENCY:
                total = max(args.rounds * c, 8)
                s0, n0 = _batch_stats(port)
                r = await _throughput(url, c, total, args.tokens)
                s1, n1 = _batch_stats(port)
                r["mean_batch"] = (s1 - s0) / max(n1 - n0, 1)
                results["throughput"].setdefault(str(c), {})[label] = r
                print(f"  {label:9s} concurrency {c:2d}: {r['tokens_per_s']:9.1f} tok/s "
                      f"({r['requests_per_s']:.2f} req/s, {total} requests, mean batch "
                      f"{r['mean_batch']:.1f})", flush=True)
            if label == "batched":
                results["latency"] = await _latency(url, engine, args.latency_runs, args.tokens)
        finally:
            proc.terminate()
            proc.wait(60)
    results["speedup"] = {c: v["batched"]["tokens_per_s"] / v["unbatched"]["tokens_per_s"]
                          for c, v in results["throughput"].items()}
    results["engine_batch32_speedup"] = _engine_ceiling(engine, 32, args.tokens)
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
    p.add_argument("--rounds", type=int, default=2, help="requests per client per level")
    p.add_argument("--latency-runs", type=int, default=15)
    p.add_argument("--max-batch-size", type=int, default=32)
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
    lat = results["latency"]
    for c, s in results["speedup"].items():
        print(f"batching speedup at concurrency {c:>2}: {s:5.2f}x")
    print(f"HTTP p50 {lat['http_p50_s'] * 1e3:.1f} ms vs direct p50 {lat['direct_p50_s'] * 1e3:.1f}"
          f" ms: ratio {lat['ratio']:.3f} (+{lat['overhead_ms']:.1f} ms)")
    target = results["speedup"]["32"] >= 4.0
    print(f"engine alone, one batch of 32 vs 32 one by one: "
          f"{results['engine_batch32_speedup']:.2f}x")
    print(f"target >= 4x at concurrency 32: {'met' if target else 'NOT met'}")
    report = {"device": name, "size": args.size, "params": params, "tokens": args.tokens,
              "python": sys.version.split()[0], "torch": torch.__version__, **results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark of bem_runtime (issue 4, bench parts b and c), one run, one machine:

  (b) throughput (completion tokens/s) at concurrency 1, 8, 32 with dynamic batching
      vs batching off (--max-batch-size 1); target >= 4x at 32;
  (c) p50 latency of one request over HTTP vs direct in-process `engine.generate_batch`.

The model is random but larger than the test toy, so matmuls dominate. The HTTP server runs in
this process on 127.0.0.1 around the same loaded engine (one copy of the weights).

    python bench/bench_runtime_serving.py --device auto --size medium --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import torch
from aiohttp import web

from bem_runtime.app import create_app
from bem_runtime.model import Engine, GenerationRequest, SamplingParams
from bem_runtime.model import toy
from bem_runtime.settings import Settings

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


async def _serve(engine: Engine, batch: int, port: int) -> web.AppRunner:
    settings = Settings(port=port, max_batch_size=batch, max_queue=4096, rate_limit_rps=1e6,
                        rate_limit_burst=10**6, max_new_tokens_limit=4096, log_level="warning")
    runner = web.AppRunner(create_app(settings, engine=engine), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    async with aiohttp.ClientSession() as s:
        for _ in range(600):  # warmup runs in the background; wait for /ready
            async with s.get(f"http://127.0.0.1:{port}/ready") as r:
                if r.status == 200:
                    return runner
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not become ready")


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
    loop = asyncio.get_running_loop()
    http, direct = [], []
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            start = time.perf_counter()
            async with session.post(url, json=b) as r:
                await r.read()
                assert r.status == 200
            http.append(time.perf_counter() - start)
            start = time.perf_counter()
            await loop.run_in_executor(None, engine.generate_batch, [req])
            direct.append(time.perf_counter() - start)
    h, d = statistics.median(http), statistics.median(direct)
    return {"http_p50_s": h, "direct_p50_s": d, "ratio": h / d, "overhead_ms": (h - d) * 1e3}


async def run(engine: Engine, args: argparse.Namespace) -> dict:
    results: dict = {"throughput": {}, "latency": {}}
    for label, batch in (("batched", args.max_batch_size), ("unbatched", 1)):
        port = _free_port()
        runner = await _serve(engine, batch, port)
        url = f"http://127.0.0.1:{port}/v1/generate"
        try:
            await _throughput(url, 2, 4, args.tokens)  # warm the path
            for c in CONCURRENCY:
                total = max(args.rounds * c, 8)
                r = await _throughput(url, c, total, args.tokens)
                results["throughput"].setdefault(str(c), {})[label] = r
                print(f"  {label:9s} concurrency {c:2d}: {r['tokens_per_s']:9.1f} tok/s "
                      f"({r['requests_per_s']:.2f} req/s, {total} requests)", flush=True)
            if label == "batched":
                results["latency"] = await _latency(url, engine, args.latency_runs, args.tokens)
        finally:
            await runner.cleanup()
    results["speedup"] = {c: v["batched"]["tokens_per_s"] / v["unbatched"]["tokens_per_s"]
                          for c, v in results["throughput"].items()}
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
        if args.model_dir:
            base, bem = args.model_dir, args.bem_dir
        else:
            base, bem = write_model(Path(tmp), args.size)
        engine = Engine.load(base, bem, device=args.device)
        engine.warmup()
    for i in range(3):  # first calls pay for allocator growth and kernel selection
        engine.generate_batch([GenerationRequest("warm", SamplingParams(max_new_tokens=args.tokens,
                                                                         seed=i))] * 8)
    name = device_name(engine)
    params = sum(p.numel() for p in engine.model.parameters())
    print(f"device: {name}; model: {args.size} ({params / 1e6:.1f}M params); "
          f"{args.tokens} new tokens per request", flush=True)
    results = asyncio.run(run(engine, args))
    lat = results["latency"]
    for c, s in results["speedup"].items():
        print(f"batching speedup at concurrency {c:>2}: {s:5.2f}x")
    print(f"HTTP p50 {lat['http_p50_s'] * 1e3:.1f} ms vs direct p50 {lat['direct_p50_s'] * 1e3:.1f}"
          f" ms: ratio {lat['ratio']:.3f} (+{lat['overhead_ms']:.1f} ms)")
    target = results["speedup"]["32"] >= 4.0
    print(f"target >= 4x at concurrency 32: {'met' if target else 'NOT met'}")
    report = {"device": name, "size": args.size, "params": params, "tokens": args.tokens,
              "python": sys.version.split()[0], "torch": torch.__version__, **results}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark (a): p50 time per generated token, BEM vs the bare base model, in one run.

A random Llama model is built in memory (large enough that matmuls dominate), a random BEM
checkpoint is attached, and greedy generations with and without BEM are interleaved (the order
alternates every repetition) so that both see the same machine state. Not a test: run it.

    python bench/bench_bem_overhead.py --device auto --json bem_overhead.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from bem_runtime.model import Engine, GenerationRequest, SamplingParams
from bem_runtime.model.bem import BEMPool
from bem_runtime.model.checkpoint import read_checkpoint
from bem_runtime.model.engine import resolve_device, resolve_dtype
from bem_runtime.model.toy import build_tokenizer

# Sizes per device: CPU runs in a few minutes on 2 cores; CUDA uses Llama-70B-shaped layers, the
# smallest shape where an eager batch-1 decoding step is bound by GPU matmuls, not Python dispatch.
PRESETS = {
    "cpu": dict(hidden=1024, intermediate=2816, layers=8, heads=16, kv_heads=16, vocab=32000),
    "cuda": dict(hidden=8192, intermediate=28672, layers=6, heads=64, kv_heads=8, vocab=32000),
}
TEXT = "The operator keeps the deployment, the service and the autoscaler of every BEM service. "


def build_model(size: dict, device: torch.device, dtype: torch.dtype) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=size["vocab"], hidden_size=size["hidden"], intermediate_size=size["intermediate"],
        num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
        num_key_value_heads=size["kv_heads"], max_position_embeddings=4096, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: no fp32 copy of a large model
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(previous)
    return model.eval().requires_grad_(False)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_checkpoint(out: Path, size: dict, experts: int, rank: int, chunk: int, top_k: int) -> None:
    """Random experts on o_proj and down_proj of every layer; deltas ~0.1 of the weights."""
    h, inter, layers = size["hidden"], size["intermediate"], size["layers"]
    tensors = {"router.weight": torch.randn(experts, h) * 3.0, "router.bias": torch.zeros(experts)}
    for i in range(layers):
        for site, d_in in (("self_attn.o_proj", h), ("mlp.down_proj", inter)):
            name = f"model.layers.{i}.{site}"
            tensors[f"A.{name}"] = torch.randn(experts, rank, d_in) / math.sqrt(d_in)
            tensors[f"B.{name}"] = torch.randn(experts, h, rank) * 0.002
    cfg = {
        "version": 1, "num_experts": experts, "rank": rank, "alpha": float(rank),
        "sites": ["self_attn.o_proj", "mlp.down_proj"], "layers": "all", "router_layer": 0,
        "routing": {"chunk_size": chunk, "top_k": top_k, "hysteresis": 0.0, "temperature": 1.0},
        "governance": {"sigma_max": None, "trust_region": None},
    }  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "bem_config.json").write_text(json.dumps(cfg))
    save_file(tensors, str(out / "experts.safetensors"))


class StepClock:
    """Timestamps every forward of the model; consecutive gaps are per-token decoding steps."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.stamps: list[float] = []
        model.register_forward_pre_hook(lambda *_: self.stamps.append(time.perf_counter()))

    def step_times(self, engine: Engine, requests: list[GenerationRequest], use_bem: bool) -> list[float]:
        """Seconds of each decoding step (forward + sampling + detokenising, one token per request).

        The first gap (prefill to first decode step) is dropped: it is not a decoding step.
        """
        self.stamps.clear()
        engine.generate_batch(requests, use_bem=use_bem)
        return [b - a for a, b in zip(self.stamps[1:], self.stamps[2:])]


def measure(engine: Engine, clock: StepClock, requests: list[GenerationRequest], args) -> dict[str, dict]:
    """Interleave the modes (order rotates every repetition); per mode: all step times and the
    per-repetition ratio to the base run next to it (robust to slow drift of the machine)."""
    modes = ["base", "bem"] + (["bem_merged"] if args.merge_decode else [])

    def once(mode: str) -> list[float]:
        engine.pool.merge_decode = mode == "bem_merged"
        return clock.step_times(engine, requests, use_bem=mode != "base")

    for _ in range(args.warmup):
        for mode in modes:
            once(mode)
    steps: dict[str, list[float]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {m: [] for m in modes}
    for rep in range(args.reps):
        run_p50 = {}
        for mode in modes[rep % len(modes) :] + modes[: rep % len(modes)]:
            times = once(mode)
            steps[mode] += times
            run_p50[mode] = statistics.median(times)
        for mode in modes:
            ratios[mode].append(run_p50[mode] / run_p50["base"])
    base = statistics.median(steps["base"])
    return {
        m: {
            "p50_ms_per_token": statistics.median(steps[m]) * 1e3,
            "p90_ms_per_token": statistics.quantiles(steps[m], n=10)[-1] * 1e3,
            "ratio_to_base": statistics.median(steps[m]) / base,
            "paired_ratio_median": statistics.median(ratios[m]),
            "steps_measured": len(steps[m]),
        }
        for m in modes
    }


def run(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    size = dict(PRESETS[device.type])
    size.update({k: v for k, v in vars(args).items() if k in size and v is not None})
    model = build_model(size, device, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(Path(tmp), size, args.experts, args.rank, args.chunk_size, args.top_k)
        start = read_checkpoint(model, Path(tmp), None)
    engine = Engine(model, build_tokenizer(), BEMPool(model), device, start)
    engine.eos_ids = set()  # fixed-length generations: a random model may emit EOS at any step
    prompt_ids = (engine.encode(TEXT * 64))[: args.prompt_tokens]
    prompt = engine.tokenizer.decode(prompt_ids[1:])
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.0)
    requests = [GenerationRequest(prompt, params)] * args.batch
    modes = measure(engine, StepClock(model), requests, args)
    return {
        "device": device_name(device),
        "device_type": device.type,
        "threads": torch.get_num_threads(),
        "dtype": str(dtype).removeprefix("torch."),
        "model": size,
        "params_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "bem": {"experts": args.experts, "rank": args.rank, "top_k": args.top_k, "chunk_size": args.chunk_size},
        "batch": args.batch, "prompt_tokens": len(prompt_ids), "new_tokens": args.new_tokens, "reps": args.reps,
        "modes": modes,
        "base_p50_ms_per_token": modes["base"]["p50_ms_per_token"],
        "bem_p50_ms_per_token": modes["bem"]["p50_ms_per_token"],
        "overhead_ratio": modes["bem"]["ratio_to_base"],
        "paired_ratio_median": modes["bem"]["paired_ratio_median"],
        "target_ratio": 1.05,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16")
    parser.add_argument("--json", type=Path, help="also write the results here")
    for name in ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"model {name} (default: per-device preset)")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--merge-decode", action="store_true", help="also time BEM with the gate folded into the weights on decode steps"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(args)
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    print(f"device: {result['device']} ({result['device_type']}, {result['dtype']}), model {result['params_millions']}M params")
    for mode, m in result["modes"].items():
        print(
            f"{mode:>10}: p50 {m['p50_ms_per_token']:.3f} ms/token, ratio to base {m['ratio_to_base']:.4f}, "
            f"median paired ratio {m['paired_ratio_median']:.4f} ({m['steps_measured']} steps)"
        )
    print(f"BEM / base = {result['overhead_ratio']:.4f} (target <= {result['target_ratio']})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

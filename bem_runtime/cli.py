"""`bem-runtime serve` and `bem-runtime make-toy`. Every serve flag can also come from an env var
(the container contract in docs/architecture.md); a flag given on the command line wins."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from bem_runtime.settings import DEVICES, LOG_LEVELS, Settings, keys_from_env


def _boolean(raw: str) -> bool:
    """Accepts the usual spellings of a switch in env vars and flags."""
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {raw!r}")


# (flag, env var, type, default, help). Defaults mirror Settings.
SERVE_OPTIONS: list[tuple[str, str, Callable[[str], Any], Any, str]] = [
    ("--model-dir", "BEM_MODEL_DIR", Path, None, "base model directory (Hugging Face layout)"),
    ("--bem-dir", "BEM_CHECKPOINT_DIR", Path, None, "BEM checkpoint directory"),
    ("--model-name", "BEM_MODEL_NAME", str, "bem", "model id served in /v1/models"),
    ("--host", "BEM_HOST", str, "127.0.0.1", "bind address (0.0.0.0 in a pod)"),
    ("--port", "BEM_PORT", int, 8080, "TCP port"),
    ("--api-key-file", "BEM_API_KEY_FILE", Path, None,
     "file with one API key per line; BEM_API_KEYS=k1,k2 adds keys; no keys = auth off"),
    ("--redis-url", "BEM_REDIS_URL", str, None, "optional Redis response cache, redis://..."),
    ("--cache-ttl", "BEM_CACHE_TTL", int, 300, "cache entry lifetime in seconds"),
    ("--top-k", "BEM_TOP_K", int, None, "routing override: experts per chunk"),
    ("--chunk-size", "BEM_CHUNK_SIZE", int, None, "routing override: tokens per chunk"),
    ("--hysteresis", "BEM_HYSTERESIS", float, None, "routing override: switch margin"),
    ("--temperature", "BEM_ROUTER_TEMPERATURE", float, None, "routing override: router temperature"),
    ("--sigma-max", "BEM_SIGMA_MAX", float, None, "governance override: spectral norm bound"),
    ("--trust-region", "BEM_TRUST_REGION", float, None, "governance override: Frobenius ratio bound"),
    ("--min-confidence", "BEM_MIN_CONFIDENCE", float, None,
     "governance override: below it a chunk uses the base model alone"),
    ("--device", "BEM_DEVICE", str, "auto", f"one of {', '.join(DEVICES)}"),
    ("--merge-decode", "BEM_MERGE_DECODE", _boolean, False,
     "fold a decode step's shared gate into the weights: per-token cost near the base model "
     "(worth it on GPUs), one extra weight copy per attached site, equal up to float rounding"),
    ("--max-batch-size", "BEM_MAX_BATCH_SIZE", int, 16, "requests per forward pass; 1 = no batching"),
    ("--batch-window-ms", "BEM_BATCH_WINDOW_MS", float, 5.0,
     "static batching only: how long an idle engine waits for a batch to fill"),
    ("--batching", "BEM_BATCHING", str, "continuous",
     "continuous (requests join and leave the running batch at every decode step) or static "
     "(a batch runs to its end; kept for comparison)"),
    ("--max-queue", "BEM_MAX_QUEUE", int, 256, "queued requests before 503 + Retry-After"),
    ("--request-timeout", "BEM_REQUEST_TIMEOUT", float, 120.0, "seconds per request (then 504)"),
    ("--max-new-tokens-limit", "BEM_MAX_NEW_TOKENS", int, 512, "largest max_new_tokens allowed"),
    ("--max-prompt-tokens", "BEM_MAX_PROMPT_TOKENS", int, None,
     "largest prompt in tokens (default: what fits the context)"),
    ("--max-body-bytes", "BEM_MAX_BODY_BYTES", int, 1 << 20, "request body limit (then 413)"),
    ("--rate-limit", "BEM_RATE_LIMIT_RPS", float, 20.0, "requests/s per API key or client IP"),
    ("--rate-limit-burst", "BEM_RATE_LIMIT_BURST", int, 40, "bucket size of the rate limit"),
    ("--drain-timeout", "BEM_DRAIN_TIMEOUT", float, 30.0,
     "seconds SIGTERM waits for in-flight requests; then they are cancelled (503) and the "
     "process exits within a second"),
    ("--log-level", "BEM_LOG_LEVEL", str, "info", f"one of {', '.join(LOG_LEVELS)}"),
]
# Settings field names that differ from the flag name.
_FIELD = {"temperature": "router_temperature",
           "rate_limit": "rate_limit_rps"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bem-runtime",
                                     description="BEM serving runtime (aiohttp + torch)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a base model with a BEM checkpoint over HTTP",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for flag, env, typ, default, text in SERVE_OPTIONS:
        raw = os.environ.get(env)
        # argparse converts string defaults with `type`, so env values are validated too.
        serve.add_argument(flag, type=typ, default=raw if raw not in (None, "") else default,
                           help=f"{text} [env {env}]")
    toy = sub.add_parser("make-toy", help="write a tiny random base model and BEM checkpoint")
    toy.add_argument("--out", type=Path, required=True, help="output directory")
    toy.add_argument("--arch", choices=("llama", "gpt2"), default="llama")
    toy.add_argument("--seed", type=int, default=0)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    values = {}
    for flag, *_ in SERVE_OPTIONS:
        name = flag.lstrip("-").replace("-", "_")
        values[_FIELD.get(name, name)] = getattr(args, name)
    values["log_level"] = values["log_level"].lower()
    return Settings(**values, api_keys=keys_from_env())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "make-toy":
        from bem_runtime.model.toy import write_toy_assets

        base, bem = write_toy_assets(args.out, arch=args.arch, seed=args.seed)
        print(f"wrote base model to {base} and BEM checkpoint to {bem}")
        return 0
    try:
        settings = settings_from_args(args)
        if settings.model_dir is None or settings.bem_dir is None:
            raise ValueError("--model-dir and --bem-dir (or BEM_MODEL_DIR and "
                             "BEM_CHECKPOINT_DIR) are required")
        settings.all_api_keys()  # fail now on an unreadable or empty key file
    except ValueError as exc:
        print(f"bem-runtime: error: {exc}", file=sys.stderr)
        return 2
    from bem_runtime.server import run_server

    return run_server(settings)


if __name__ == "__main__":
    sys.exit(main())

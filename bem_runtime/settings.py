"""Runtime settings: one frozen dataclass filled from CLI flags, each with an env-var fallback.

The flag and env names are the container contract in docs/architecture.md; the operator renders
them, so renaming one here breaks deployed pods.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

LOG_LEVELS = ("debug", "info", "warning", "error")
DEVICES = ("auto", "cpu", "cuda")
BATCHING = ("continuous", "static")


@dataclass(frozen=True)
class Settings:
    model_dir: Path | None = None
    bem_dir: Path | None = None
    model_name: str = "bem"
    host: str = "127.0.0.1"
    port: int = 8080
    api_key_file: Path | None = None
    api_keys: tuple[str, ...] = ()
    redis_url: str | None = None
    cache_ttl: int = 300
    top_k: int | None = None
    chunk_size: int | None = None
    hysteresis: float | None = None
    router_temperature: float | None = None
    sigma_max: float | None = None
    trust_region: float | None = None
    min_confidence: float | None = None
    device: str = "auto"
    merge_decode: bool = False
    max_batch_size: int = 16
    batch_window_ms: float = 5.0
    batching: str = "continuous"
    max_queue: int = 256
    request_timeout: float = 120.0
    max_new_tokens_limit: int = 512
    max_prompt_tokens: int | None = None  # None: the model's context minus max_new_tokens
    max_body_bytes: int = 1 << 20
    rate_limit_rps: float = 20.0
    rate_limit_burst: int = 40
    drain_timeout: float = 30.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        problems = []
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.batching not in BATCHING:
            problems.append(f"batching must be one of {', '.join(BATCHING)}, got {self.batching!r}")
        if self.log_level not in LOG_LEVELS:
            problems.append(f"log level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        for name in ("max_batch_size", "max_queue", "max_new_tokens_limit", "max_body_bytes",
                     "rate_limit_burst"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout", "drain_timeout", "cache_ttl", "rate_limit_rps"):
            if getattr(self, name) <= 0:
                problems.append(f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not 0 < self.port < 65536:
            problems.append(f"port must be in 1..65535, got {self.port}")
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    def all_api_keys(self) -> tuple[str, ...]:
        """Keys from the mounted Secret file plus BEM_API_KEYS; empty means auth is off."""
        keys = list(self.api_keys)
        if self.api_key_file is not None:
            keys.extend(read_key_file(self.api_key_file))
        return tuple(dict.fromkeys(k for k in keys if k))


def read_key_file(path: Path) -> list[str]:
    """One key per line; blank lines and '#' comments ignored (Secrets often end with newline)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read API key file {path}: {exc.strerror}") from exc
    keys = [line.strip() for line in text.splitlines()]
    keys = [k for k in keys if k and not k.startswith("#")]
    if not keys:
        raise ValueError(f"API key file {path} holds no key (one key per line expected)")
    return keys


def keys_from_env() -> tuple[str, ...]:
    raw = os.environ.get("BEM_API_KEYS", "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())

"""Runtime settings, each declared once in the Settings dataclass below: its type and default
(the field), its flag, env var, help, and whether it changes outputs (the field's `setting`
metadata). The CLI options (cli.py), the env reading, the response-cache key (inference.py) and
the docs check (tests) all derive from that one declaration, via SETTINGS.

The flag and env names are the container contract in docs/architecture.md; the operator renders
them, so renaming one here breaks deployed pods.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

LOG_LEVELS = ("debug", "info", "warning", "error")
DEVICES = ("auto", "cpu", "cuda")
BATCHING = ("continuous", "static", "static-leave")

# Where a setting enters the response-cache key (inference.request_cache_key); None: it does not
# change what a request returns. The layout is the key's v1 scheme.
MODEL = "model"
MODEL_DIR = "model_dir"
BEM_DIR = "bem_dir"
OVERRIDES = "overrides"


def boolean(raw: str) -> bool:
    """Accepts the usual spellings of a switch in env vars and flags."""
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {raw!r}")


def comma_list(raw: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in str(raw).split(",") if k.strip())


def cidr_list(raw: str) -> tuple[str, ...]:
    """Comma-separated CIDRs (a bare address is its own /32 or /128), normalised."""
    out = []
    for item in comma_list(raw):
        try:
            out.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"trusted-proxies: {item!r} is not an IP address or CIDR such as 10.0.0.0/8") from None
    return tuple(out)


@dataclass(frozen=True)
class Setting:
    """One runtime setting. `name` is the Settings field (or, for a process-level setting that
    is not in Settings, its key); `flag` None means env only."""

    name: str
    env: str
    flag: str | None
    default: Any
    help: str
    parse: Callable[[str], Any]
    cache_key: str | None = None  # where it enters the cache key; None: outputs do not change

    @property
    def changes_output(self) -> bool:
        return self.cache_key is not None


def _setting(default: Any, env: str, help: str, flag: str | None = None, *,
             cache_key: str | None = None, parse: Callable[[str], Any] | None = None) -> Any:
    """A Settings field carrying its Setting record; the name, and the parser unless given,
    come from the field itself (X | None parses as X, bool as a switch, a tuple as a comma
    list). No flag: env only."""
    meta = {"env": env, "flag": flag, "help": help, "cache_key": cache_key, "parse": parse}
    return dataclasses.field(default=default, metadata={"setting": meta})


@dataclass(frozen=True)
class Settings:
    model_dir: Path | None = _setting(
        None, "BEM_MODEL_DIR", "base model directory (Hugging Face layout)", "--model-dir",
        cache_key=MODEL_DIR)
    bem_dir: Path | None = _setting(
        None, "BEM_CHECKPOINT_DIR", "BEM checkpoint directory", "--bem-dir", cache_key=BEM_DIR)
    model_name: str = _setting(
        "bem", "BEM_MODEL_NAME", "model id served in /v1/models", "--model-name", cache_key=MODEL)
    max_checkpoints: int = _setting(
        8, "BEM_MAX_CHECKPOINTS",
        "BEM checkpoints resident at once over the one base model (the --bem-dir one counts)",
        "--max-checkpoints")
    checkpoints_file: Path | None = _setting(
        None, "BEM_CHECKPOINTS_FILE",
        'JSON {"<name>": "<path>", ...}: more checkpoints loaded at start, after --bem-dir',
        "--checkpoints-file")
    checkpoint_root: Path | None = _setting(
        None, "BEM_CHECKPOINT_ROOT",
        "directory the admin API may load checkpoints from (symlinks resolved); relative paths "
        "are taken under it (default: the directory above --bem-dir)",
        "--checkpoint-root")
    admin_token_file: Path | None = _setting(
        None, "BEM_ADMIN_TOKEN_FILE",
        "file holding the bearer token of the admin API (/v1/checkpoints); without it the admin "
        "API answers 403",
        "--admin-token-file")
    host: str = _setting("127.0.0.1", "BEM_HOST", "bind address (0.0.0.0 in a pod)", "--host")
    port: int = _setting(8080, "BEM_PORT", "TCP port of the API and the probes", "--port")
    # Ports of their own, so a NetworkPolicy can admit the scraper and the operator apart from
    # the API's clients: once set, that port alone answers those routes.
    metrics_port: int | None = _setting(
        None, "BEM_METRICS_PORT",
        "TCP port that alone serves /metrics (default: /metrics on --port)", "--metrics-port")
    admin_port: int | None = _setting(
        None, "BEM_ADMIN_PORT",
        "TCP port that alone serves the admin API, /v1/checkpoints (default: on --port)",
        "--admin-port")
    api_key_file: Path | None = _setting(
        None, "BEM_API_KEY_FILE",
        "file with one API key per line; BEM_API_KEYS=k1,k2 adds keys; no keys = auth off",
        "--api-key-file")
    api_keys: tuple[str, ...] = _setting(
        (), "BEM_API_KEYS", "comma-separated API keys, added to the key file's", parse=comma_list)
    redis_url: str | None = _setting(
        None, "BEM_REDIS_URL", "optional Redis response cache, redis://...", "--redis-url")
    cache_ttl: int = _setting(
        300, "BEM_CACHE_TTL", "cache entry lifetime in seconds", "--cache-ttl")
    top_k: int | None = _setting(
        None, "BEM_TOP_K", "routing override: experts per chunk", "--top-k", cache_key=OVERRIDES)
    chunk_size: int | None = _setting(
        None, "BEM_CHUNK_SIZE", "routing override: tokens per chunk", "--chunk-size",
        cache_key=OVERRIDES)
    hysteresis: float | None = _setting(
        None, "BEM_HYSTERESIS", "routing override: switch margin", "--hysteresis",
        cache_key=OVERRIDES)
    router_temperature: float | None = _setting(
        None, "BEM_ROUTER_TEMPERATURE", "routing override: router temperature", "--temperature",
        cache_key=OVERRIDES)
    sigma_max: float | None = _setting(
        None, "BEM_SIGMA_MAX", "governance override: spectral norm bound", "--sigma-max",
        cache_key=OVERRIDES)
    trust_region: float | None = _setting(
        None, "BEM_TRUST_REGION", "governance override: Frobenius ratio bound", "--trust-region",
        cache_key=OVERRIDES)
    min_confidence: float | None = _setting(
        None, "BEM_MIN_CONFIDENCE",
        "governance override: below it a chunk uses the base model alone", "--min-confidence",
        cache_key=OVERRIDES)
    device: str = _setting("auto", "BEM_DEVICE", f"one of {', '.join(DEVICES)}", "--device")
    merge_decode: bool = _setting(
        False, "BEM_MERGE_DECODE",
        "fold a decode step's shared gate into the weights: per-token cost near the base "
        "model (worth it on GPUs), one extra weight copy per attached site, equal up to float "
        "rounding",
        "--merge-decode")
    max_batch_size: int = _setting(
        16, "BEM_MAX_BATCH_SIZE", "requests per forward pass; 1 = no batching", "--max-batch-size")
    batch_window_ms: float = _setting(
        5.0, "BEM_BATCH_WINDOW_MS",
        "static batching only: how long an idle engine waits for a batch to fill",
        "--batch-window-ms")
    batching: str = _setting(
        "continuous", "BEM_BATCHING",
        "continuous (requests join and leave the running batch at every decode step); kept for "
        "comparison: static (a batch is admitted when the engine is idle and every row stays "
        "in the forward pass until the longest ends) and static-leave (the same, but a "
        "finished row leaves at once)",
        "--batching")
    max_queue: int = _setting(
        256, "BEM_MAX_QUEUE", "queued requests before 503 + Retry-After", "--max-queue")
    request_timeout: float = _setting(
        120.0, "BEM_REQUEST_TIMEOUT", "seconds per request (then 504)", "--request-timeout")
    max_new_tokens_limit: int = _setting(
        512, "BEM_MAX_NEW_TOKENS", "largest max_new_tokens allowed", "--max-new-tokens-limit")
    max_prompt_tokens: int | None = _setting(  # None: the model's context minus max_new_tokens
        None, "BEM_MAX_PROMPT_TOKENS", "largest prompt in tokens (default: what fits the context)",
        "--max-prompt-tokens")
    max_body_bytes: int = _setting(
        1 << 20, "BEM_MAX_BODY_BYTES", "request body limit (then 413)", "--max-body-bytes")
    rate_limit_rps: float = _setting(
        20.0, "BEM_RATE_LIMIT_RPS", "requests/s per API key or client IP", "--rate-limit")
    rate_limit_burst: int = _setting(
        40, "BEM_RATE_LIMIT_BURST", "bucket size of the rate limit", "--rate-limit-burst")
    # Behind a Gateway every peer is a Gateway pod: only the hops these proxies append to
    # X-Forwarded-For are believed, so a client cannot pick its own rate-limit bucket.
    trusted_proxies: tuple[str, ...] = _setting(
        (), "BEM_TRUSTED_PROXIES",
        "comma-separated CIDRs of proxies whose X-Forwarded-For is believed: the client is then "
        "the right-most address of the chain outside them (default none: the peer address)",
        "--trusted-proxies", parse=cidr_list)
    drain_timeout: float = _setting(
        30.0, "BEM_DRAIN_TIMEOUT",
        "seconds SIGTERM waits for in-flight requests; then they are cancelled (503) and the "
        "process exits within a second",
        "--drain-timeout")
    log_level: str = _setting(
        "info", "BEM_LOG_LEVEL", f"one of {', '.join(LOG_LEVELS)}", "--log-level")

    def __post_init__(self) -> None:
        problems = []
        if self.device not in DEVICES:
            problems.append(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.batching not in BATCHING:
            problems.append(f"batching must be one of {', '.join(BATCHING)}, got {self.batching!r}")
        if self.log_level not in LOG_LEVELS:
            problems.append(f"log level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        for name in ("max_batch_size", "max_queue", "max_new_tokens_limit", "max_body_bytes",
                     "rate_limit_burst", "max_checkpoints"):
            if getattr(self, name) < 1:
                problems.append(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        for name in ("request_timeout", "drain_timeout", "cache_ttl", "rate_limit_rps"):
            if getattr(self, name) <= 0:
                problems.append(f"{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        for name, port in (("port", self.port), ("metrics-port", self.metrics_port),
                           ("admin-port", self.admin_port)):
            if port is not None and not 0 < port < 65536:
                problems.append(f"{name} must be in 1..65535, got {port}")
        if len(set(self.listen_ports)) != len(self.listen_ports):
            problems.append(f"port, metrics-port and admin-port must differ, got "
                            f"{', '.join(map(str, self.listen_ports))}")
        try:
            cidr_list(",".join(self.trusted_proxies))
        except argparse.ArgumentTypeError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("invalid settings: " + "; ".join(problems))

    @property
    def listen_ports(self) -> tuple[int, ...]:
        """Every port the server listens on: --port, then the metrics and admin ports if set."""
        return tuple(p for p in (self.port, self.metrics_port, self.admin_port) if p is not None)

    def all_api_keys(self) -> tuple[str, ...]:
        """Keys from the mounted Secret file plus BEM_API_KEYS; empty means auth is off."""
        keys = list(self.api_keys)
        if self.api_key_file is not None:
            keys.extend(read_key_file(self.api_key_file))
        return tuple(dict.fromkeys(k for k in keys if k))


def _parser_for(hint: Any) -> Callable[[str], Any]:
    """The string parser a field's type implies: X | None parses as X."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is not tuple and args:
        hint = args[0]
    if hint is bool:
        return boolean
    if typing.get_origin(hint) is tuple:
        return comma_list
    return hint


def _table() -> tuple[Setting, ...]:
    hints = typing.get_type_hints(Settings)
    rows = []
    for f in dataclasses.fields(Settings):
        meta = dict(f.metadata["setting"])
        meta["parse"] = meta["parse"] or _parser_for(hints[f.name])
        rows.append(Setting(name=f.name, default=f.default, **meta))
    return tuple(rows)


# Every Settings field, in declaration order.
SETTINGS: tuple[Setting, ...] = _table()
# Process-level settings outside Settings: read where they are used.
TERMINATION_MESSAGE = Setting(
    "termination_message_path", "BEM_TERMINATION_MESSAGE_PATH", None, "/dev/termination-log",
    "where a model-load failure is written (the pod's termination message)", str)
ALL_SETTINGS: tuple[Setting, ...] = SETTINGS + (TERMINATION_MESSAGE,)
ACCEPTED_ENV: frozenset[str] = frozenset(s.env for s in ALL_SETTINGS)


def setting(name: str) -> Setting:
    return next(s for s in ALL_SETTINGS if s.name == name)


def env_raw(s: Setting) -> str | None:
    """The env var's value, or None when it is unset or empty (then the default applies)."""
    raw = os.environ.get(s.env)
    return raw if raw not in (None, "") else None


def env_only_values() -> dict[str, Any]:
    """The Settings fields that have no flag, read from their env vars."""
    values = {}
    for s in SETTINGS:
        if s.flag is None:
            raw = env_raw(s)
            values[s.name] = s.parse(raw) if raw is not None else s.default
    return values


def cache_identity(settings: Settings) -> dict[str, Any]:
    """The settings that change outputs, laid out as the cache key's v1 scheme: named entries
    as strings, overrides as a list in table order."""
    out: dict[str, Any] = {}
    for s in SETTINGS:
        if s.cache_key == OVERRIDES:
            out.setdefault(OVERRIDES, []).append(getattr(settings, s.name))
        elif s.cache_key is not None:
            out[s.cache_key] = str(getattr(settings, s.name))
    return out


def checkpoint_root(settings: Settings) -> Path | None:
    """Where the admin API may load from: --checkpoint-root, else the directory above --bem-dir."""
    if settings.checkpoint_root is not None:
        return settings.checkpoint_root
    return settings.bem_dir.parent if settings.bem_dir is not None else None


def read_admin_token(path: Path) -> str:
    """The first non-blank line of the token file (Secrets often end with a newline)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read admin token file {path}: {exc}") from exc
    token = next((line.strip() for line in lines if line.strip()), "")
    if len(token) < 16:
        raise ValueError(f"admin token file {path} must hold a token of at least 16 characters")
    return token


def read_checkpoints_file(path: Path) -> dict[str, str]:
    """The start list: a JSON object of checkpoint name -> directory."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read checkpoints file {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoints file {path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict) or not all(isinstance(v, str) and v for v in raw.values()):
        raise ValueError(f'checkpoints file {path} must hold a JSON object {{"<name>": "<path>", ...}}')
    bad = [name for name in raw if not is_checkpoint_name(name)]
    if bad:
        raise ValueError(f"checkpoints file {path}: names {bad} are not DNS-1123 labels "
                         f"({CHECKPOINT_NAME_RULE})")
    return raw


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
CHECKPOINT_NAME_RULE = "lower-case letters, digits and '-', at most 63"  # what _DNS_LABEL says


def is_checkpoint_name(name: str) -> bool:
    return isinstance(name, str) and _DNS_LABEL.fullmatch(name) is not None


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
    return env_only_values()["api_keys"]

"""bem_config.json: parsing, validation and the merge with deployment overrides."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .types import RoutingOverrides

FORMAT_VERSION = 1
CONFIG_FILE = "bem_config.json"
TENSORS_FILE = "experts.safetensors"


@dataclass(frozen=True)
class BEMConfig:
    num_experts: int
    rank: int
    alpha: float
    sites: tuple[str, ...]
    layers: tuple[int, ...] | str  # indices, or "all"
    router_layer: int | None  # None: the first attached layer
    chunk_size: int
    top_k: int
    hysteresis: float
    temperature: float
    sigma_max: float | None
    trust_region: float | None
    min_confidence: float | None = None
    version: int = FORMAT_VERSION

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "num_experts": self.num_experts,
            "rank": self.rank,
            "alpha": self.alpha,
            "sites": list(self.sites),
            "layers": self.layers if isinstance(self.layers, str) else list(self.layers),
            "router_layer": self.router_layer,
            "routing": {
                "chunk_size": self.chunk_size,
                "top_k": self.top_k,
                "hysteresis": self.hysteresis,
                "temperature": self.temperature,
            },
            "governance": {
                "sigma_max": self.sigma_max,
                "trust_region": self.trust_region,
                "min_confidence": self.min_confidence,
            },
        }


def _req(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise CheckpointError(f"{where}: missing required field '{key}'")
    return obj[key]


def _int(value: Any, name: str, minimum: int, source: str = CONFIG_FILE) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CheckpointError(f"{source}: '{name}' must be an integer >= {minimum}, got {value!r}")
    return value


def _num(
    value: Any, name: str, *, positive: bool, optional: bool = False, source: str = CONFIG_FILE
) -> float | None:
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        rule = "> 0" if positive else ">= 0"
        raise CheckpointError(f"{source}: '{name}' must be a finite number {rule}, got {value!r}")
    return float(value)


def parse_config(raw: dict[str, Any]) -> BEMConfig:
    """Validate a decoded bem_config.json; every error names the field to fix."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{CONFIG_FILE} must hold a JSON object")
    version = raw.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{CONFIG_FILE}: unsupported format version {version!r}; this runtime reads version {FORMAT_VERSION}"
        )
    sites = _req(raw, "sites", CONFIG_FILE)
    if not isinstance(sites, list) or not sites or not all(isinstance(s, str) and s for s in sites):
        raise CheckpointError(f"{CONFIG_FILE}: 'sites' must be a non-empty list of module-name suffixes")
    layers = _req(raw, "layers", CONFIG_FILE)
    if layers != "all":
        if not isinstance(layers, list) or not layers:
            raise CheckpointError(f"{CONFIG_FILE}: 'layers' must be \"all\" or a non-empty list of indices")
        layers = tuple(sorted({_int(i, "layers[]", 0) for i in layers}))
    routing = _req(raw, "routing", CONFIG_FILE)
    governance = raw.get("governance") or {}
    if not isinstance(routing, dict) or not isinstance(governance, dict):
        raise CheckpointError(f"{CONFIG_FILE}: 'routing' and 'governance' must be JSON objects")
    router_layer = raw.get("router_layer")
    cfg = BEMConfig(
        num_experts=_int(_req(raw, "num_experts", CONFIG_FILE), "num_experts", 1),
        rank=_int(_req(raw, "rank", CONFIG_FILE), "rank", 1),
        alpha=_num(_req(raw, "alpha", CONFIG_FILE), "alpha", positive=True),
        sites=tuple(sites),
        layers=layers,
        router_layer=None if router_layer is None else _int(router_layer, "router_layer", 0),
        chunk_size=_int(_req(routing, "chunk_size", "routing"), "routing.chunk_size", 1),
        top_k=_int(_req(routing, "top_k", "routing"), "routing.top_k", 1),
        hysteresis=_num(routing.get("hysteresis", 0.0), "routing.hysteresis", positive=False),
        temperature=_num(routing.get("temperature", 1.0), "routing.temperature", positive=True),
        sigma_max=_num(governance.get("sigma_max"), "governance.sigma_max", positive=True, optional=True),
        trust_region=_num(governance.get("trust_region"), "governance.trust_region", positive=True, optional=True),
        min_confidence=_num(governance.get("min_confidence"), "governance.min_confidence", positive=False, optional=True),
    )
    return check_consistency(cfg)


def check_consistency(cfg: BEMConfig) -> BEMConfig:
    if cfg.top_k > cfg.num_experts:
        raise CheckpointError(f"top_k={cfg.top_k} exceeds num_experts={cfg.num_experts}")
    if cfg.min_confidence is not None and cfg.min_confidence > 1:
        raise CheckpointError(f"min_confidence must be in [0, 1], got {cfg.min_confidence}")
    return cfg


def apply_overrides(cfg: BEMConfig, overrides: RoutingOverrides | None) -> BEMConfig:
    """Deployment overrides win over the checkpoint; the merged result is validated again."""
    if overrides is None:
        return cfg
    changes = {f.name: getattr(overrides, f.name) for f in dataclasses.fields(overrides)}
    changes = {k: v for k, v in changes.items() if v is not None}
    for name, value in changes.items():
        if name in ("top_k", "chunk_size"):
            _int(value, name, 1, source="routing override")
        else:
            _num(value, name, positive=name not in ("hysteresis", "min_confidence"), source="routing override")
    return check_consistency(dataclasses.replace(cfg, **changes))


def read_config(bem_dir: Path) -> BEMConfig:
    path = bem_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"BEM checkpoint {bem_dir} has no {CONFIG_FILE}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    return parse_config(raw)

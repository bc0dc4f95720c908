"""A BEM checkpoint over a base model: its files read (any thread), then validated against the
base and governed (the model's thread), strictly: an error names the tensor and both shapes."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from torch import nn

from .adapter import SiteExperts
from .config import CONFIG_FILE, TENSORS_FILE, BEMConfig, apply_overrides, read_config
from .errors import CheckpointError
from .governance import govern
from .routing import RoutingPolicy
from .sites import Site, hidden_size, resolve_sites
from .types import RoutingOverrides


def expected_shapes(cfg: BEMConfig, sites: list[Site], d_model: int) -> dict[str, tuple[int, ...]]:
    e, r = cfg.num_experts, cfg.rank
    shapes: dict[str, tuple[int, ...]] = {"router.weight": (e, d_model), "router.bias": (e,)}
    for s in sites:
        shapes[f"A.{s.name}"] = (e, r, s.d_in)
        shapes[f"B.{s.name}"] = (e, s.d_out, r)
    return shapes


def check_tensors(tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse any missing, extra, mis-shaped, non-float or non-finite tensor, naming each one."""
    problems = []
    for name, want in shapes.items():
        t = tensors.get(name)
        if t is None:
            problems.append(f"tensor '{name}' is missing from the checkpoint (the base model needs shape {list(want)})")
        elif tuple(t.shape) != want:
            problems.append(
                f"tensor '{name}' has shape {list(t.shape)} in the checkpoint but the base model needs {list(want)}"
            )
        elif not t.is_floating_point():
            problems.append(f"tensor '{name}' has dtype {t.dtype}; expected a floating-point tensor")
        elif not torch.isfinite(t).all():
            problems.append(f"tensor '{name}' contains NaN or infinite values")
    extra = sorted(set(tensors) - set(shapes))
    if extra:
        problems.append(f"tensors {extra[:5]} match no attached site of the base model (sites/layers disagree)")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError("BEM checkpoint does not match the base model: " + "; ".join(problems[:5]) + more)


def _router_layer_index(cfg: BEMConfig, sites: list[Site]) -> int:
    first = min(s.layer for s in sites)
    index = first if cfg.router_layer is None else cfg.router_layer
    if index > first:
        raise CheckpointError(
            f"router_layer={index} is after the first attached layer {first}: the router input must be "
            "computed by layers without adapters (set router_layer <= the first attached layer)"
        )
    return index



@dataclass(eq=False)
class Checkpoint:
    """One loaded BEM checkpoint: validated against the base, governed, not yet in any batch.

    Compared by identity: a checkpoint replaced under the same name is another object, and the
    rows still running on the old one keep it (and its tensors) alive until they finish."""

    name: str
    path: Path
    config: BEMConfig
    policy: RoutingPolicy
    sites: list[Site]
    router_index: int
    router_weight: torch.Tensor  # [E, d_model] float32
    router_bias: torch.Tensor  # [E] float32
    experts: dict[str, SiteExperts]  # by site name
    load_report: dict[str, int]
    digest: str  # sha256 over the config and tensor files
    dtype: torch.dtype
    loaded_at: float = field(default_factory=time.time)

    @property
    def num_experts(self) -> int:
        return self.config.num_experts

    @property
    def nbytes(self) -> int:
        """Device memory the checkpoint adds to the base model."""
        router = sum(t.numel() * t.element_size() for t in (self.router_weight, self.router_bias))
        return router + sum(e.nbytes for e in self.experts.values())


@dataclass(frozen=True)
class CheckpointFiles:
    """A checkpoint directory as read from disk: the config (deployment overrides applied) and the
    tensor file's bytes, not yet parsed or checked against any model."""

    path: Path
    config: BEMConfig
    raw: bytes  # the tensor file
    digest: str  # sha256 over the config and tensor files


def read_files(bem_dir: Path, overrides: RoutingOverrides | None) -> CheckpointFiles:
    """Read a checkpoint's files: file work and hashing only, no torch (a thread that runs torch
    ops on a CPU gets its own OpenMP team), so a server runs it off the thread that runs the
    model and decoding goes on while a large file is read."""
    try:
        cfg = apply_overrides(read_config(bem_dir), overrides)
        path = bem_dir / TENSORS_FILE
        if not path.exists() or path.is_dir():  # a pipe is fine (tests hold a load open with one)
            raise CheckpointError(f"BEM checkpoint {bem_dir} has no {TENSORS_FILE}")
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
        digest = hashlib.sha256((bem_dir / CONFIG_FILE).read_bytes() + b"\0" + raw).hexdigest()
    except OSError as exc:  # a name too long, a directory not readable, ...
        raise CheckpointError(f"cannot read BEM checkpoint {bem_dir}: {exc.strerror or exc}") from None
    return CheckpointFiles(bem_dir, cfg, raw, digest)


def read_checkpoint(
    model: nn.Module,
    bem_dir: Path,
    overrides: RoutingOverrides | None,
    *,
    name: str = "bem",
    allow_qkv: bool = False,
) -> Checkpoint:
    """Read, validate and govern a checkpoint for the model; the model is not touched."""
    return build_checkpoint(model, read_files(bem_dir, overrides), name=name, allow_qkv=allow_qkv)


def build_checkpoint(
    model: nn.Module, files: CheckpointFiles, *, name: str = "bem", allow_qkv: bool = False
) -> Checkpoint:
    """Validate read files against the model and apply governance (torch work: on the model's
    thread); the model is not touched."""
    cfg = files.config
    try:
        tensors = load_tensors(files.raw)
    except SafetensorError as exc:
        raise CheckpointError(f"cannot read {files.path / TENSORS_FILE}: {exc}") from exc
    sites = resolve_sites(model, cfg.sites, cfg.layers, allow_qkv=allow_qkv)
    router_index = _router_layer_index(cfg, sites)
    check_tensors(tensors, expected_shapes(cfg, sites, hidden_size(model)))
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    report = {"spectral_clamp": 0, "trust_region": 0}
    experts = {}
    for site in sites:
        a = tensors[f"A.{site.name}"].double()
        w_fro = torch.linalg.matrix_norm(site.weight_out_in().detach().double(), ord="fro").item()
        b, n_spec, n_trust = govern(
            site.name, a, tensors[f"B.{site.name}"], cfg.scale, w_fro, cfg.sigma_max, cfg.trust_region
        )
        report["spectral_clamp"] += n_spec
        report["trust_region"] += n_trust
        experts[site.name] = SiteExperts.stack(a.to(device, dtype), b.to(device, dtype))
    policy = RoutingPolicy(
        cfg.num_experts, cfg.chunk_size, cfg.top_k, cfg.hysteresis, cfg.temperature, cfg.min_confidence
    )
    return Checkpoint(
        name=name,
        path=files.path,
        config=cfg,
        policy=policy,
        sites=sites,
        router_index=router_index,
        router_weight=tensors["router.weight"].float().to(device),
        router_bias=tensors["router.bias"].float().to(device),
        experts=experts,
        load_report=report,
        digest=files.digest,
        dtype=dtype,
    )

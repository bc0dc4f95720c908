"""`bem-runtime serve` and `bem-runtime make-toy` (the toy model; with --variants and --foreign
also the checkpoints the demo and the BEMCheckpoint tests load). The serve options come from the
settings table (settings.SETTINGS): every flag can also come from its env var (the container
contract in docs/architecture.md); a flag given on the command line wins."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from bem_runtime.settings import (CHECKPOINT_NAME_RULE, SETTINGS, Setting, Settings,
                                  env_only_values, env_raw, is_checkpoint_name, read_admin_token,
                                  read_checkpoints_file)


def _dest(s: Setting) -> str:
    assert s.flag is not None
    return s.flag.lstrip("-").replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bem-runtime",
                                     description="BEM serving runtime (aiohttp + torch)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a base model with a BEM checkpoint over HTTP",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for s in SETTINGS:
        if s.flag is None:
            continue
        raw = env_raw(s)
        # argparse converts string defaults with `type`, so env values are validated too.
        serve.add_argument(s.flag, dest=_dest(s), type=s.parse,
                           default=raw if raw is not None else s.default,
                           help=f"{s.help} [env {s.env}]")
    toy = sub.add_parser("make-toy", help="write a tiny random base model and BEM checkpoint")
    toy.add_argument("--out", type=Path, required=True, help="output directory")
    toy.add_argument("--arch", choices=("llama", "gpt2"), default="llama")
    toy.add_argument("--seed", type=int, default=0)
    toy.add_argument("--variants", nargs="+", type=_checkpoint_name, default=[], metavar="NAME",
                     help="also write OUT/checkpoints/NAME: more checkpoints for the same base, "
                          "each routing and answering differently")
    toy.add_argument("--foreign", action="store_true",
                     help="also write OUT/foreign/bem: a checkpoint for another base, which this "
                          "base refuses naming a tensor and both shapes")
    return parser


def _checkpoint_name(raw: str) -> str:
    if not is_checkpoint_name(raw):
        raise argparse.ArgumentTypeError(f"'{raw}' is not a DNS-1123 label "
                                         f"({CHECKPOINT_NAME_RULE})")
    return raw


def make_toy(args: argparse.Namespace) -> None:
    from bem_runtime.model.toy import write_foreign, write_toy_assets, write_variant

    base, bem = write_toy_assets(args.out, arch=args.arch, seed=args.seed)
    print(f"wrote base model to {base} and BEM checkpoint to {bem}")
    for i, name in enumerate(dict.fromkeys(args.variants), start=1):
        path = write_variant(bem, args.out / "checkpoints" / name, seed=args.seed + i)
        print(f"wrote checkpoint {name} to {path}")
    if args.foreign:
        path = write_foreign(args.out / "foreign" / "bem", arch=args.arch, seed=args.seed)
        print(f"wrote a checkpoint for another base to {path}")


def settings_from_args(args: argparse.Namespace) -> Settings:
    values = env_only_values()
    values.update({s.name: getattr(args, _dest(s)) for s in SETTINGS if s.flag is not None})
    values["log_level"] = values["log_level"].lower()
    return Settings(**values)


def check_checkpoint_settings(settings: Settings) -> None:
    """Fail at start (exit 2) on an unreadable admin token or start list, or one that does not
    fit --max-checkpoints."""
    if settings.admin_token_file is not None:
        token = read_admin_token(settings.admin_token_file)
        if token in settings.all_api_keys():
            raise ValueError("the admin token must not also be a client API key")
    if settings.checkpoints_file is not None:
        names = read_checkpoints_file(settings.checkpoints_file)
        if settings.model_name in names:
            raise ValueError(f"checkpoints file {settings.checkpoints_file} names "
                             f"'{settings.model_name}', the --model-name of --bem-dir")
        if len(names) + 1 > settings.max_checkpoints:
            raise ValueError(f"checkpoints file {settings.checkpoints_file} lists {len(names)} "
                             f"checkpoints; with --bem-dir's that exceeds --max-checkpoints="
                             f"{settings.max_checkpoints}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "make-toy":
        make_toy(args)
        return 0
    try:
        settings = settings_from_args(args)
        if settings.model_dir is None or settings.bem_dir is None:
            raise ValueError("--model-dir and --bem-dir (or BEM_MODEL_DIR and "
                             "BEM_CHECKPOINT_DIR) are required")
        settings.all_api_keys()  # fail now on an unreadable or empty key file
        check_checkpoint_settings(settings)
    except ValueError as exc:
        print(f"bem-runtime: error: {exc}", file=sys.stderr)
        return 2
    from bem_runtime.server import run_server

    return run_server(settings)


if __name__ == "__main__":
    sys.exit(main())

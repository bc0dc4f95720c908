#!/usr/bin/env python3
"""Copy the BEMService CRD from its single source to the places that ship it.

crds/bemservice.yaml is the source; the Helm chart's crds/ and manifests/crd.yaml are
byte-identical copies (tests/install/test_consistency.py checks them). Run `make sync-crd`
after editing the source; `--check` only reports stale copies (for CI).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = Path("crds/bemservice.yaml")
COPIES = (Path("helm/bem-operator/crds/bemservice.yaml"), Path("manifests/crd.yaml"))


def stale_copies(root: Path = ROOT) -> list[Path]:
    """Copies whose bytes differ from the source (missing ones included)."""
    source = (root / SOURCE).read_bytes()
    return [c for c in COPIES if not (root / c).is_file() or (root / c).read_bytes() != source]


def sync(root: Path = ROOT) -> list[Path]:
    """Overwrite every stale copy with the source; returns what was written."""
    source = (root / SOURCE).read_bytes()
    written = stale_copies(root)
    for copy in written:
        (root / copy).parent.mkdir(parents=True, exist_ok=True)
        (root / copy).write_bytes(source)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a copy differs from crds/bemservice.yaml; write nothing")
    args = parser.parse_args(argv)
    if not (ROOT / SOURCE).is_file():
        print(f"error: {SOURCE} does not exist; nothing to copy", file=sys.stderr)
        return 2
    if args.check:
        stale = stale_copies()
        for copy in stale:
            print(f"stale: {copy} differs from {SOURCE}; run `make sync-crd`", file=sys.stderr)
        return 1 if stale else 0
    for copy in sync():
        print(f"updated {copy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

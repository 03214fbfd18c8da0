"""``python -m flows.build``: run the build flow locally and print the variant table and the release."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    """Run a build with the defaults, or with a JSON config file (any subset of BuildConfig's fields)."""
    parser = argparse.ArgumentParser(prog="python -m flows.build", description=__doc__)
    parser.add_argument("--config", type=Path, help="JSON file with BuildConfig fields; omitted fields keep defaults")
    args = parser.parse_args(argv)

    from flows.build import build
    from flows.config import BuildConfig
    from tasks.export.evaluate import format_table
    from tasks.registry.release import read_manifest
    from tasks.registry.store import open_store

    try:
        config = BuildConfig.model_validate(json.loads(args.config.read_text())) if args.config else BuildConfig()
    except (OSError, json.JSONDecodeError, ValidationError) as exc:
        print(f"invalid config {args.config}: {exc}", file=sys.stderr)
        return 2
    release = build(config)
    manifest = read_manifest(open_store(config.store), release.model, release.version)
    print()
    print(format_table(manifest["variants"]))
    print()
    print(f"release:    {release.model} {release.version}")
    print(f"location:   {release.uri}")
    print(f"manifest:   {release.manifest_uri}")
    print(f"serving:    {release.served_variant}")
    print(f"production: {'promoted' if release.promoted else 'not promoted'} ({release.gate_reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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
    print(f"serving:    {release.served_variant}: {manifest['served'].get('reason', '')}")
    print(f"production: {'promoted' if release.promoted else 'not promoted'} ({release.gate_reason})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def run_flow_cli(flow_fn, config_type, prog: str, argv: list[str] | None = None) -> int:  # noqa: ANN001
    """Run ``flow_fn`` with a config from ``--config FILE`` and ``--set dotted.key=VALUE`` overrides; print the result.

    Exit 2 on a bad config (naming the field), 1 when the flow fails with a message.
    """
    parser = argparse.ArgumentParser(prog=prog, description=flow_fn.description)
    parser.add_argument("--config", type=Path, help=f"JSON file with {config_type.__name__} fields")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one field, e.g. --set source=/data/new --set drift.drift_share=0.5")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.config.read_text()) if args.config else {}
        for item in args.set:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r}: use KEY=VALUE")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw  # a plain string
            target = data
            *parents, leaf = key.split(".")
            for parent in parents:
                target = target.setdefault(parent, {})
            target[leaf] = value
        config = config_type.model_validate(data)
    except (OSError, ValueError, ValidationError) as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 2
    try:
        result = flow_fn(config)
    except (RuntimeError, FileNotFoundError) as exc:
        print(f"{flow_fn.name} failed: {exc}", file=sys.stderr)
        return 1
    print(result.model_dump_json(indent=2))
    return 0

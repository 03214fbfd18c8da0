"""``python -m flows.versions --model NAME``: the model's versions with their lineage, and production's history."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    """Print complete versions (oldest first) and every move of the production alias; exit 2 on a bad request."""
    from tasks.export.evaluate import format_table
    from tasks.registry.aliases import read_alias
    from tasks.registry.config import StoreConfig, validate_name
    from tasks.registry.lineage import version_rows
    from tasks.registry.release import list_versions
    from tasks.registry.store import open_store

    parser = argparse.ArgumentParser(prog="python -m flows.versions", description=__doc__)
    parser.add_argument("--model", default="digits-classifier")
    parser.add_argument("--store-uri", default="file://.lepton/registry", help="file://path or s3://bucket/prefix")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO); credentials from the AWS chain")
    args = parser.parse_args(argv)
    try:
        validate_name("model name", args.model)
        store = open_store(StoreConfig(uri=args.store_uri, endpoint_url=args.endpoint_url))
    except (ValueError, ValidationError) as exc:
        print(f"invalid request: {exc}", file=sys.stderr)
        return 2
    alias, _ = read_alias(store, args.model)
    manifests = list_versions(store, args.model)
    if not manifests:
        print(f"{args.model}: no complete versions in {store.uri}")
        return 0
    print(format_table(version_rows(manifests, alias.version if alias else None)))
    if alias:
        print(f"\nproduction history of {args.model}:")
        print(format_table([
            {"at": m.at[:19], "kind": m.kind, "from": m.from_version or "-", "to": m.to_version, "by": m.by, "reason": m.reason}
            for m in alias.history
        ]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The rollback flow: point ``production`` at an earlier, verified version.

``python -m flows.rollback --model digits-classifier [--to VERSION] [--reason TEXT] [--store-uri URI]``
"""

from __future__ import annotations

import argparse
import sys

from prefect import flow
from pydantic import ValidationError

from flows.config import RollbackConfig
from tasks.registry.rollback import RollbackResult
from tasks.registry.steps import rollback_production


@flow(name="rollback", log_prints=True)
def rollback(config: RollbackConfig = RollbackConfig()) -> RollbackResult:
    """Move production to ``to_version`` (default: the previous version) after checking every file's sha256."""
    return rollback_production(config.store, config.model_name, config.to_version, config.reason, config.work_dir)


def main(argv: list[str] | None = None) -> int:
    """Roll back from the command line; exit 2 on a bad request, 1 when the rollback is refused."""
    from tasks.registry.release import IntegrityError
    from tasks.registry.rollback import RollbackError

    parser = argparse.ArgumentParser(prog="python -m flows.rollback", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=RollbackConfig.model_fields["model_name"].default)
    parser.add_argument("--to", dest="to_version", help="version to serve; default: the one before the current")
    parser.add_argument("--reason", default="manual rollback")
    parser.add_argument("--store-uri", help="file://path or s3://bucket/prefix (default: the local registry)")
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO); credentials from the AWS chain")
    args = parser.parse_args(argv)
    store = {k: v for k, v in (("uri", args.store_uri), ("endpoint_url", args.endpoint_url)) if v}
    try:
        config = RollbackConfig(model_name=args.model, to_version=args.to_version, reason=args.reason, store=store)
    except ValidationError as exc:
        print(f"invalid rollback request: {exc}", file=sys.stderr)
        return 2
    try:
        result = rollback(config)
    except (RollbackError, IntegrityError) as exc:
        print(f"rollback refused: {exc}", file=sys.stderr)
        return 1
    print(f"{result.model}: production {result.from_version} -> {result.to_version} ({result.verified_files} files verified)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

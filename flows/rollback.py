"""The rollback flow: point ``production`` at an earlier, verified version.

``python -m flows.rollback [--config FILE] [--set model_name=NAME --set to_version=VERSION --set reason=TEXT ...]``
"""

from __future__ import annotations

from prefect import flow

from flows.config import RollbackConfig
from tasks.registry.rollback import RollbackResult
from tasks.registry.steps import rollback_production


@flow(name="rollback", log_prints=True)
def rollback(config: RollbackConfig = RollbackConfig()) -> RollbackResult:
    """Move production to ``to_version`` (default: the previous version) after checking every file's sha256."""
    return rollback_production(config.store, config.model_name, config.to_version, config.reason, config.work_dir)


def summarize(config: RollbackConfig, result: RollbackResult) -> str:
    """One line: what moved where, and how many files were verified."""
    return f"{result.model}: production {result.from_version} -> {result.to_version} ({result.verified_files} files verified)"


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.rollback``: exit 0 done, 2 a bad config or a failure the user can act on."""
    from flows.cli import run

    return run(rollback, RollbackConfig, argv, summarize=summarize)


if __name__ == "__main__":
    raise SystemExit(main())

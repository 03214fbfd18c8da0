"""The score flow: production's released artifact scores a batch of new inputs and logs them for monitoring.

``python -m flows.score [--config FILE] [--set source=/data/new-images ...]``
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.states import State
from prefect.utilities.annotations import quote

from flows.config import ScoreConfig
from flows.outcome import unchanged
from flows.runner import fan_out
from tasks.registry.steps import fetch_production
from tasks.score.scoring import ScoreResult
from tasks.score.steps import archive_batch, collect_inputs, log_scores, plan_scoring, score_shard


@flow(name="score", log_prints=True)
def score(config: ScoreConfig = ScoreConfig()) -> ScoreResult | State:
    """Score every file in ``config.source`` with the released variant fastest on this host; log the rows to the store.

    The batch is scored in shards of ``config.shard_files`` files, in parallel on ``config.runner``.
    """
    production = fetch_production(config.store, config.model_name, config.work_dir, candidates=config.variant_choice.measure)
    batch = collect_inputs(config.source, config.store, config.work_dir)
    # quote(): a batch lists every file (tens of thousands of them), a release's manifest its data; Prefect
    # would otherwise visit each entry of each task's parameters looking for futures, twice per task (on
    # Dask the shards' parameters go unquoted: a worker receives them as they are).
    plan = plan_scoring(
        quote(production), quote(batch), config.store, config.batch_size, config.variant_choice, config.work_dir, config.shard_files
    )
    threads = config.runner.threads_per_worker if config.runner.kind == "dask" else None
    shards = fan_out(
        score_shard,
        [
            {"production": quote(production), "files": quote(files), "variant": plan.variant, "batch_size": config.batch_size,
             "out_dir": config.work_dir / "scoring" / batch.batch_id, "threads": threads, "workers": config.workers}
            for files in plan.shards
        ],
        config.runner,
    )
    result = log_scores(quote(production), quote(batch), quote(plan), quote(shards), config.store)
    if config.processed:
        archive_batch(quote(batch), quote(result), Path(config.processed))
    if result.scored == 0:
        # Nothing new was scored (an empty inbox, a batch seen before, no readable file): visible in the run list.
        return unchanged("Nothing scored", result.note or "no input was scored", result, tag="nothing-scored")
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.score``: exit 0 done, 2 a bad config or a failure the user can act on."""
    from flows.cli import run

    return run(score, ScoreConfig, argv)


if __name__ == "__main__":
    raise SystemExit(main())

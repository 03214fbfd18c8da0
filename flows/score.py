"""The score flow: production's released artifact scores a batch of new images and logs them for monitoring."""

from __future__ import annotations

from prefect import flow

from flows.config import ScoreConfig
from tasks.monitor.steps import ScoreResult, collect_inputs, fetch_production, score_batch


@flow(name="score", log_prints=True)
def score(config: ScoreConfig = ScoreConfig()) -> ScoreResult:
    """Score every image in ``config.source``; write predictions and monitoring features to the store."""
    production = fetch_production(config.store, config.model_name, config.work_dir)
    batch = collect_inputs(config.source, config.store, config.work_dir)
    return score_batch(production, batch, config.store, config.batch_size)


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    raise SystemExit(run_flow_cli(score, ScoreConfig, "python -m flows.score"))

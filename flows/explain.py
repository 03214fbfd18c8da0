"""The explain flow: LIME on what production serves, as a self-contained HTML report in the store.

``python -m flows.explain [--config FILE] [--set source=latest-batch --set num_images=20 ...]``
"""

from __future__ import annotations

from prefect import flow

from flows.config import ExplainConfig
from flows.runner import fan_out
from tasks.explain.steps import ExplainResult, choose_explained, explain_batch, gather_explain_inputs, publish_explanations
from tasks.registry.steps import fetch_production


@flow(name="explain", log_prints=True)
def explain(config: ExplainConfig = ExplainConfig()) -> ExplainResult:
    """Explain ``num_images`` inputs (least confident first, then by predicted class) with the released artifact.

    LIME runs on batches of ``config.batch_images`` inputs, in parallel on ``config.runner``.
    """
    production = fetch_production(config.store, config.model_name, config.work_dir)
    batch = gather_explain_inputs(production, config.source, config.store, config.work_dir)
    plan = choose_explained(production, batch, config.num_images, config.lime, config.work_dir)
    total = len(plan.chosen.names)
    explained = fan_out(
        explain_batch,
        [
            {"production": production, "plan": plan, "start": start, "stop": min(start + config.batch_images, total),
             "config": config.lime}
            for start in range(0, total, config.batch_images)
        ],
        config.runner,
    )
    return publish_explanations(production, batch, plan, explained, config.lime, config.store, config.work_dir)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.explain``: exit 0 done, 2 a bad config or a failure the user can act on."""
    from flows.cli import run

    return run(explain, ExplainConfig, argv)


if __name__ == "__main__":
    raise SystemExit(main())

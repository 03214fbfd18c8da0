"""The explain flow: LIME on what production serves, as a self-contained HTML report in the store."""

from __future__ import annotations

from prefect import flow

from flows.config import ExplainConfig
from tasks.explain.steps import ExplainResult, explain_images, gather_explain_inputs
from tasks.monitor.steps import fetch_production


@flow(name="explain", log_prints=True)
def explain(config: ExplainConfig = ExplainConfig()) -> ExplainResult:
    """Explain ``num_images`` images (least confident first, then by predicted class) with the released artifact."""
    production = fetch_production(config.store, config.model_name, config.work_dir)
    batch = gather_explain_inputs(production, config.source, config.store, config.work_dir)
    return explain_images(production, batch, config.num_images, config.lime, config.store, config.work_dir)


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    raise SystemExit(run_flow_cli(explain, ExplainConfig, "python -m flows.explain"))

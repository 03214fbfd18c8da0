"""The feedback flow: true labels arrive, are joined to production's logged predictions, and the realized accuracy is tested.

``python -m flows.feedback --set source=/data/labels.csv`` (or ``--config FILE`` with inline ``labels``)
"""

from __future__ import annotations

from prefect import flow

from flows.config import FeedbackConfig
from tasks.monitor.steps import FeedbackReport, emit_performance_event, join_feedback, measure_performance, publish_feedback
from tasks.registry.steps import fetch_production


@flow(name="feedback", log_prints=True)
def feedback(config: FeedbackConfig = FeedbackConfig()) -> FeedbackReport:
    """Realized accuracy on labelled predictions; ``lepton.model.performance.degraded`` when it fell significantly."""
    production = fetch_production(config.store, config.model_name, config.work_dir)
    window = join_feedback(config.store, production, config.source, config.labels, config.window_hours, config.work_dir)
    result, html = measure_performance(production, window, config.performance, config.work_dir)
    report = publish_feedback(config.store, production, window, result, html, config.keep_for_training)
    return emit_performance_event(report)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.feedback``: exit 0 done, 2 a bad config or a failure the user can act on."""
    from flows.cli import run

    return run(feedback, FeedbackConfig, argv)


if __name__ == "__main__":
    raise SystemExit(main())

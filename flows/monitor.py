"""The monitor flow: production logs of a window vs the release's reference; drift emits an event.

``python -m flows.monitor [--config FILE] [--set window_hours=6 --set drift.false_alarm_rate=0.005 ...]``
"""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows.config import MonitorConfig
from flows.outcome import tag_run, unchanged
from tasks.monitor.steps import DriftReport, check_drift, emit_drift_event, publish_drift_report, read_production_window
from tasks.registry.steps import fetch_production


@flow(name="monitor", log_prints=True)
def monitor(config: MonitorConfig = MonitorConfig()) -> DriftReport | State:
    """Two-sample drift tests of the window at a stated false-alarm rate, a label-free accuracy estimate,
    the report; ``lepton.model.drift.detected`` on drift."""
    production = fetch_production(config.store, config.model_name, config.work_dir)
    window = read_production_window(config.store, production, config.window_hours, config.window_rows, config.work_dir)
    result, html = check_drift(production, window, config.drift, config.work_dir)
    report = publish_drift_report(config.store, production, result, html)
    report = emit_drift_event(report)
    if report.result.status != "not enough data":
        tag_run("drift" if report.result.status == "drift" else "no-drift")
        return report
    # No verdict is not a clean bill of health: the run list says so.
    return unchanged("Not enough data", report.result.detail, report, tag="not-enough-data")


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.monitor``: exit 0 done, 2 a bad config or a failure the user can act on."""
    from flows.cli import run

    return run(monitor, MonitorConfig, argv)


if __name__ == "__main__":
    raise SystemExit(main())

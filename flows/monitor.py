"""The monitor flow: production logs of a window vs the release's reference; drift emits an event."""

from __future__ import annotations

from prefect import flow

from flows.config import MonitorConfig
from tasks.monitor.steps import (
    DriftReport,
    check_drift,
    emit_drift_event,
    fetch_production,
    publish_drift_report,
    read_production_window,
)


@flow(name="monitor", log_prints=True)
def monitor(config: MonitorConfig = MonitorConfig()) -> DriftReport:
    """Evidently drift report of the window; ``lepton.model.drift.detected`` when it crosses the threshold."""
    production = fetch_production(config.store, config.model_name, config.work_dir)
    window = read_production_window(config.store, production, config.window_hours, config.window_rows, config.work_dir)
    result, html = check_drift(production, window, config.drift, config.work_dir)
    report = publish_drift_report(config.store, production, result, html)
    return emit_drift_event(report)


if __name__ == "__main__":
    from flows.cli import run_flow_cli

    raise SystemExit(run_flow_cli(monitor, MonitorConfig, "python -m flows.monitor"))

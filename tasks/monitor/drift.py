"""Drift of production logs against the release's reference, with an Evidently 0.7 Report.

The current window is reduced to a seeded sample of at most ``sample_rows`` rows before the
report runs: the statistical tests then keep the same power whatever the traffic (a
million-row window would otherwise flag differences too small to matter), the report stays
seconds long, and its HTML stays small enough to open.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel

from tasks.monitor.config import DriftConfig


class DriftResult(BaseModel):
    """The verdict of one monitoring run."""

    status: Literal["drift", "no drift", "not enough data"]
    rows: int
    rows_tested: int
    reference_rows: int
    drift_share: float | None = None
    drifted_columns: list[str] = []
    prediction_drift: bool = False
    column_scores: dict[str, float] = {}
    detail: str = ""

    @property
    def drift(self) -> bool:
        return self.status == "drift"


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    config: DriftConfig,
    html_path: Path | None = None,
) -> DriftResult:
    """Compare ``current`` with ``reference`` on the given columns; write the Evidently HTML to ``html_path``.

    Raises:
        ValueError: a column missing from either frame.
    """
    columns = numerical + categorical
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} data lacks monitoring columns {missing}")
    if len(current) < config.min_rows:
        return DriftResult(
            status="not enough data",
            rows=len(current),
            rows_tested=0,
            reference_rows=len(reference),
            detail=f"{len(current)} rows in the window; at least {config.min_rows} are needed for a verdict",
        )
    tested = current
    if len(current) > config.sample_rows:
        tested = current.sample(n=config.sample_rows, random_state=config.seed)
    report_data = _run_report(reference[columns], tested[columns], numerical, categorical, config, html_path)
    scores, drifted, share = report_data
    prediction = [c for c in categorical if c in drifted]
    is_drift = share >= config.drift_share or (config.prediction_drift_counts and bool(prediction))
    return DriftResult(
        status="drift" if is_drift else "no drift",
        rows=len(current),
        rows_tested=len(tested),
        reference_rows=len(reference),
        drift_share=share,
        drifted_columns=drifted,
        prediction_drift=bool(prediction),
        column_scores=scores,
        detail=(
            f"{len(drifted)} of {len(columns)} columns drifted ({share:.0%}; threshold {config.drift_share:.0%})"
            + ("; the predicted class drifted" if prediction else "")
        ),
    )


def _run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    config: DriftConfig,
    html_path: Path | None,
) -> tuple[dict[str, float], list[str], float]:
    import warnings

    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    # One ValueDrift per column (what DataDriftPreset is made of) without the preset's
    # DriftedColumnsCount, which tests every column a second time: the share is counted here.
    metrics = [ValueDrift(column=c, method=config.num_method, threshold=config.threshold) for c in numerical] + [
        ValueDrift(column=c, method=config.cat_method, threshold=config.cat_threshold) for c in categorical
    ]
    with warnings.catch_warnings():
        # Constant columns (all images one size) make numpy warn inside the distribution plots.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(current.reset_index(drop=True), data_definition=definition),
            reference_data=Dataset.from_pandas(reference.reset_index(drop=True), data_definition=definition),
        )
    result = snapshot.dict()
    scores = {}
    for metric in result["metrics"]:
        config_ = metric.get("config", {})
        if config_.get("type", "").endswith("ValueDrift"):
            scores[config_["column"]] = float(metric["value"])
    drifted = []
    for test in result["tests"]:
        params = (test.get("metric_config") or {}).get("params", {})
        if params.get("type", "").endswith("ValueDrift") and str(test.get("status")).endswith("FAIL"):
            drifted.append(params["column"])
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(html_path))
    columns = numerical + categorical
    return scores, [c for c in columns if c in drifted], len(set(drifted)) / len(columns)


"""Drift alarms with a stated false-alarm rate, detection of partial shifts, the label-free accuracy estimate.

Every window is fresh data from a known generator (a 10-class mixture: six image statistics, an
8-dimensional embedding, the confidence and the predicted class), so "clean" is exactly in-distribution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom, chisquare

from tasks.monitor.config import DriftConfig
from tasks.monitor.drift import ReferenceTooSmall, chi2_two_sample, detect_drift, write_drift_report
from tasks.monitor.estimate import estimate_accuracy, fit_accuracy_calibration

STATISTICS = [f"statistic_{i}" for i in range(5)] + ["width"]
EMBEDDING = [f"embedding_{i}" for i in range(8)]
NUMERICAL = STATISTICS + EMBEDDING + ["confidence"]
CATEGORICAL = ["predicted_class"]
CENTRES = np.random.default_rng(123).normal(0.0, 2.0, size=(10, 8))
# Unequal class shares, as in real data: a reference sample's mix then differs visibly from a window's.
SHARES = np.array([0.16, 0.14, 0.12, 0.11, 0.1, 0.09, 0.08, 0.07, 0.07, 0.06])


def draw(seed: int, rows: int, contaminated: float = 0.0) -> pd.DataFrame:
    """Fresh rows; ``contaminated`` of them form a new cluster in the embedding (as unfamiliar images do)."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(10, size=rows, p=SHARES)
    embedding = CENTRES[classes] + rng.normal(0.0, 1.0, size=(rows, 8))
    moved = int(round(contaminated * rows))
    # Inside every column's range (the classes' centres spread wider), so no single column shows much.
    embedding[:moved] = 2.5 + rng.normal(0.0, 1.0, size=(moved, 8))
    statistics = rng.normal(0.0, 1.0, size=(rows, 5))
    frame = pd.DataFrame(np.column_stack([statistics, np.full(rows, 16.0), embedding]), columns=STATISTICS + EMBEDDING)
    frame["confidence"] = rng.beta(8.0, 1.5, size=rows)
    frame["predicted_class"] = [f"c{c}" for c in classes]
    return frame


REFERENCE = draw(0, 540)
# Binomial bound: at a true rate of 1 %, more than 6 alarms in 150 windows happens with probability < 0.001.
WINDOWS, MAX_ALARMS = 150, 6


@pytest.mark.parametrize("rows", [100, 5000])
def test_clean_windows_alarm_at_the_stated_rate(rows: int) -> None:
    config = DriftConfig()
    assert binom.sf(MAX_ALARMS, WINDOWS, config.false_alarm_rate) < 1e-3
    alarms = [detect_drift(REFERENCE, draw(1000 + s, rows), NUMERICAL, CATEGORICAL, config).drift for s in range(WINDOWS)]
    assert sum(alarms) <= MAX_ALARMS
    if rows == 5000:
        # The test above has teeth: the goodness-of-fit chi-square this monitor used before (the
        # reference's class shares taken as exact, p < 0.001) flags most of the same clean windows.
        expected = REFERENCE["predicted_class"].value_counts(normalize=True).sort_index()
        old = 0
        for s in range(30):
            counts = draw(1000 + s, rows)["predicted_class"].value_counts().reindex(expected.index, fill_value=0)
            old += chisquare(counts, expected * rows).pvalue < 0.001
        assert old >= 15


def test_a_contaminated_window_is_caught_by_the_embedding_test() -> None:
    config = DriftConfig()
    results = [detect_drift(REFERENCE, draw(2000 + s, 1000, 0.10), NUMERICAL, CATEGORICAL, config) for s in range(20)]
    assert sum(r.drift for r in results) >= 18
    assert sum(r.embedding.drifted for r in results) >= 18
    # No single column is moved far enough to flag it on most windows: the multivariate test does the work.
    assert sum(bool(r.drifted_columns) for r in results) < sum(r.embedding.drifted for r in results)


def test_a_few_far_away_rows_are_caught_by_the_novelty_test() -> None:
    results = []
    for seed in range(20):
        window = draw(3000 + seed, 1000)
        window.loc[:49, "statistic_2"] += 6.0  # 5 % of the rows far outside on one statistic
        results.append(detect_drift(REFERENCE, window, NUMERICAL, CATEGORICAL, DriftConfig()))
    # The view of every column sees it (the embedding view does not: the statistic is not in it).
    assert [n.columns for n in results[0].novelty] == [NUMERICAL, EMBEDDING]
    assert sum(r.novelty[0].drifted for r in results) >= 18
    assert sum(r.drift for r in results) >= 18 and sum("statistic_2" in r.drifted_columns for r in results) <= 5
    assert all(r.novelty[0].share > 3 * r.novelty[0].expected_share for r in results)
    assert all(abs(r.novelty[0].expected_share - 0.01) < 0.005 for r in results)


def test_a_moved_column_and_a_skewed_class_mix_are_named() -> None:
    config = DriftConfig()
    moved = draw(7, 600).assign(statistic_0=lambda f: f["statistic_0"] + 0.5)
    result = detect_drift(REFERENCE, moved, NUMERICAL, CATEGORICAL, config)
    assert result.drift and result.drifted_columns == ["statistic_0"] and not result.prediction_drift
    skewed = draw(8, 600).assign(predicted_class=lambda f: np.where(np.arange(len(f)) % 2 == 0, "c9", f["predicted_class"]))
    result = detect_drift(REFERENCE, skewed, NUMERICAL, CATEGORICAL, config)
    assert result.prediction_drift and "predicted_class" in result.drifted_columns


def test_bad_windows_are_explained_not_crashed(tmp_path: Path) -> None:
    config = DriftConfig()
    window = draw(9, 300)
    window.loc[:9, "statistic_1"] = np.nan
    window.loc[10:14, "embedding_3"] = np.inf
    result = detect_drift(REFERENCE, window, NUMERICAL, CATEGORICAL, config)
    assert result.rows == 285 and result.quarantined == ["15 window rows with a NaN or infinite value left out"]
    one_class = draw(10, 200).assign(predicted_class="c0")
    result = detect_drift(REFERENCE, one_class, NUMERICAL, CATEGORICAL, config)
    assert result.prediction_drift and result.notes == ["every row of the window has predicted_class = 'c0'"]
    few = detect_drift(REFERENCE, window.head(50), NUMERICAL, CATEGORICAL, config)
    assert few.status == "not enough data" and "at least 100" in few.detail
    with pytest.raises(ValueError, match=r"current data lacks monitoring columns \['x9'\]"):
        detect_drift(REFERENCE.assign(x9=0.0), window, NUMERICAL + ["x9"], [], config)
    html = write_drift_report(REFERENCE, one_class, NUMERICAL, CATEGORICAL, result, "Drift of m", tmp_path / "r.html", config)
    page = html.read_text()
    # The verdict comes before Evidently's report, and names what drifted.
    body = page[page.index("<body") :]
    assert body.index("lepton-verdict") < body.lower().index("evidently") and "predicted_class" in body[: body.lower().index("evidently")]


def test_large_windows_are_sampled() -> None:
    result = detect_drift(REFERENCE, draw(11, 20_000), NUMERICAL, CATEGORICAL, DriftConfig(sample_rows=1000))
    assert (result.rows, result.rows_tested, result.embedding.rows) == (20_000, 1000, 1000)


def test_two_sample_chi_square_pools_rare_classes() -> None:
    reference = pd.Series(["a"] * 50 + ["b"] * 50 + ["rare"] * 2)
    p_value, distance = chi2_two_sample(reference, pd.Series(["a"] * 48 + ["b"] * 52))
    assert p_value > 0.1 and 0 < distance < 0.2
    p_value, distance = chi2_two_sample(reference, pd.Series(["a"] * 90 + ["b"] * 10))
    assert p_value < 1e-6 and distance > 0.3


def test_many_classes_and_a_small_window_keep_the_class_test_alive() -> None:
    # 40 classes, 5,000 reference rows, 100 window rows: no single class is big enough alone, so the
    # rare ones are pooled into several bins, and a window of one class still stands out.
    rng = np.random.default_rng(4)
    reference = pd.Series(rng.choice([f"c{i}" for i in range(40)], size=5000))
    p_value, _ = chi2_two_sample(reference, pd.Series(["c0"] * 100))
    assert p_value < 1e-6
    p_value, _ = chi2_two_sample(reference, pd.Series(rng.choice([f"c{i}" for i in range(40)], size=100)))
    assert p_value > 1e-3


def test_a_reference_too_small_or_without_usable_columns_is_a_clear_error() -> None:
    with pytest.raises(ReferenceTooSmall, match="the reference has 10 usable rows; at least 20"):
        detect_drift(REFERENCE.head(10), draw(12, 200), NUMERICAL, CATEGORICAL, DriftConfig())
    broken = REFERENCE.assign(statistic_0=np.nan)
    result = detect_drift(broken, draw(13, 200), NUMERICAL, CATEGORICAL, DriftConfig())
    assert "statistic_0" not in [c.column for c in result.columns]
    assert result.quarantined[0] == "columns ['statistic_0'] are NaN or infinite in every reference row: not tested"
    with pytest.raises(ReferenceTooSmall, match="no monitoring column is usable"):
        detect_drift(broken, draw(13, 200), ["statistic_0"], [], DriftConfig())


def calibrated_model(seed: int, rows: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """A calibrated classifier's confidences and correctness: right with probability equal to its confidence."""
    rng = np.random.default_rng(seed)
    confidence = 0.1 + 0.9 * rng.beta(a, b, size=rows)
    return confidence, rng.random(rows) < confidence


@pytest.mark.parametrize(("a", "b"), [(8.0, 1.5), (4.0, 2.0), (3.0, 2.0)])
def test_label_free_estimate_tracks_a_known_shift(a: float, b: float) -> None:
    # The shift makes the model less sure, and it stays calibrated: the binned estimator is exact in
    # expectation, so it must land within 3 pp and its interval must hold the truth.
    calibration = fit_accuracy_calibration(*calibrated_model(0, 2000, 8.0, 1.5))
    confidence, correct = calibrated_model(1, 3000, a, b)
    estimate = estimate_accuracy(calibration, confidence, "binned")
    assert abs(estimate.accuracy - correct.mean()) < 0.03
    assert estimate.low <= correct.mean() <= estimate.high and estimate.high - estimate.low < 0.1
    # In distribution, both estimators recover the accuracy.
    confidence, correct = calibrated_model(2, 3000, 8.0, 1.5)
    for estimator in ("atc", "binned"):
        assert abs(estimate_accuracy(calibration, confidence, estimator).accuracy - correct.mean()) < 0.03


def test_the_estimate_interval_widens_for_small_windows() -> None:
    calibration = fit_accuracy_calibration(*calibrated_model(0, 500, 8.0, 1.5))
    small = estimate_accuracy(calibration, calibrated_model(3, 100, 4.0, 2.0)[0], "binned")
    large = estimate_accuracy(calibration, calibrated_model(3, 5000, 4.0, 2.0)[0], "binned")
    assert small.high - small.low > large.high - large.low > 0


def test_config_refuses_too_few_permutations() -> None:
    with pytest.raises(ValueError, match="at least 2499 permutations"):
        DriftConfig(false_alarm_rate=0.002, permutations=200)


def test_rows_that_do_not_measure_an_optional_column_are_kept_and_tested_on_the_rest(tmp_path: Path) -> None:
    # Inputs sent to the server as tensors carry no size on disk: NaN there, everything else measured.
    config = DriftConfig()
    window = draw(11, 400)
    window.loc[:149, "width"] = np.nan
    result = detect_drift(REFERENCE, window, NUMERICAL, CATEGORICAL, config, optional=["width"])
    assert result.rows == 400 and result.status == "no drift"
    assert result.quarantined == ["150 window rows do not measure ['width'] (a missing value, or an image sent as a tensor): those columns are tested on the 250 rows that do"]
    # Without the declaration the same rows are quarantined, as any NaN is.
    strict = detect_drift(REFERENCE, window, NUMERICAL, CATEGORICAL, config)
    assert strict.rows == 250 and strict.quarantined == ["150 window rows with a NaN or infinite value left out"]
    # The measured rows still carry the column's test: a changed width among them is caught.
    moved = window.copy()
    moved.loc[150:, "width"] = 20.0
    drifted = detect_drift(REFERENCE, moved, NUMERICAL, CATEGORICAL, config, optional=["width"])
    assert "width" in drifted.drifted_columns
    # A window no row of which measures the column: every other test runs, and the report says what was not tested.
    unmeasured = window.assign(width=np.nan)
    result = detect_drift(REFERENCE, unmeasured, NUMERICAL, CATEGORICAL, config, optional=["width"])
    assert result.status == "no drift" and "width" not in [c.column for c in result.columns]
    assert "not tested: no window row measures ['width']" in result.notes
    html = write_drift_report(REFERENCE, unmeasured, NUMERICAL, CATEGORICAL, result, "t", tmp_path / "r.html", config, ["width"])
    assert html.stat().st_size > 0
    # NaN outside the optional columns is still quarantined.
    broken = window.copy()
    broken.loc[200:204, "statistic_0"] = np.nan
    assert detect_drift(REFERENCE, broken, NUMERICAL, CATEGORICAL, config, optional=["width"]).rows == 395

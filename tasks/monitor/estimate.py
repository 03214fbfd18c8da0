"""Label-free accuracy of a window, from the served model's confidence, calibrated on held-out labelled rows.

Two estimators, both fitted at release time on rows the model never trained on:

- ``atc``, average thresholded confidence (Garg et al., "Leveraging Unlabeled Data to Predict
  Out-of-Distribution Performance", ICLR 2022): the confidence threshold above which the share of
  held-out rows equals their accuracy; on new data the share above it is the estimate.
- ``binned``, histogram-binning calibration (Zadrozny and Elkan, 2001): the held-out accuracy of
  each confidence bin (equal-count bins); the estimate is the mean of the window's bin accuracies.
  It is exact when the shift changes how often the model is sure, not how right it is when sure.

The interval resamples both the window and the held-out rows (through refits on bootstrap
resamples stored with the release), so a small window or a small held-out set widens it.
Neither can see a shift that makes the model confidently wrong: the benchmark
(``benchmarks/drift_sensitivity.py``) prints each next to the true accuracy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from tasks.registry.manifest import AccuracyCalibration

Estimator = Literal["atc", "binned"]
BOOTSTRAP = 200


def fit_accuracy_calibration(
    confidence: np.ndarray, correct: np.ndarray, bootstrap: int = BOOTSTRAP, bins: int | None = None, seed: int = 0
) -> AccuracyCalibration:
    """Both estimators' maps from held-out rows (top-1 ``confidence``, whether each was ``correct``).

    ``bins`` defaults to one per 40 rows (at least 2, at most 20): a bin's accuracy then rests on
    enough rows to be worth mapping.

    Raises:
        ValueError: no rows, or the two arrays differ in length.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.shape != correct.shape or confidence.size == 0:
        raise ValueError(f"need one correctness flag per confidence and at least one row, got {confidence.shape} and {correct.shape}")
    bins = bins or int(np.clip(confidence.size // 40, 2, 20))
    edges = np.unique(np.quantile(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1]))
    rng = np.random.default_rng(seed)
    thresholds, bin_maps = [], []
    for _ in range(bootstrap):
        pick = rng.integers(0, confidence.size, size=confidence.size)
        thresholds.append(round(_threshold(confidence[pick], correct[pick]), 8))
        bin_maps.append(_bin_accuracy(confidence[pick], correct[pick], edges, fallback=float(correct.mean())))
    return AccuracyCalibration(
        threshold=_threshold(confidence, correct),
        bootstrap_thresholds=thresholds,
        accuracy=float(correct.mean()),
        rows=int(confidence.size),
        bin_edges=edges.tolist(),
        bin_accuracy=_bin_accuracy(confidence, correct, edges, fallback=float(correct.mean())),
        bootstrap_bin_accuracy=bin_maps,
    )


def _threshold(confidence: np.ndarray, correct: np.ndarray) -> float:
    """The confidence above which the share of rows equals the accuracy (as nearly as whole rows allow)."""
    right = int(round(correct.mean() * confidence.size))
    if right >= confidence.size:
        return float(np.nextafter(confidence.min(), -np.inf))  # every row counts as right
    # The (n - right)-th smallest confidence: exactly ``right`` rows lie strictly above it (without ties).
    return float(np.sort(confidence)[confidence.size - right - 1])


def _bin_accuracy(confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray, fallback: float) -> list[float]:
    """Accuracy per confidence bin (a bin a resample left empty gets the overall accuracy)."""
    index = np.searchsorted(edges, confidence, side="right")
    hits = np.bincount(index, weights=correct.astype(np.float64), minlength=len(edges) + 1)
    counts = np.bincount(index, minlength=len(edges) + 1)
    return [round(float(h / c), 6) if c else fallback for h, c in zip(hits, counts)]


class AccuracyEstimate(BaseModel):
    """The estimated accuracy of a window, its 95 % interval, and the held-out accuracy it compares with."""

    estimator: Estimator
    accuracy: float
    low: float
    high: float
    reference_accuracy: float
    rows: int
    unfamiliar_share: float = 0.0
    # The interval's top when unfamiliar rows are at chance, as in the estimate (``high`` lets them be anything).
    high_at_chance: float | None = None

    @property
    def drop_pp(self) -> float:
        """Estimated percentage points lost against the held-out rows."""
        return (self.reference_accuracy - self.accuracy) * 100.0

    def describe(self) -> str:
        unfamiliar = (
            f"; {self.unfamiliar_share:.0%} of rows with an embedding unlike any held-out row, those beyond the usual 1 % "
            "counted at chance" if self.unfamiliar_share > 0.01 else ""
        )
        return (
            f"estimated accuracy {self.accuracy:.1%} (95 % interval {self.low:.1%}-{self.high:.1%}, {self.rows} rows, "
            f"no labels, {self.estimator}{unfamiliar}) vs {self.reference_accuracy:.1%} on held-out data"
        )


def estimate_accuracy(
    calibration: AccuracyCalibration,
    confidence: np.ndarray,
    estimator: Estimator = "atc",
    familiar: np.ndarray | None = None,
    chance: float = 0.0,
    expected_unfamiliar: float = 0.0,
    level: float = 0.95,
    seed: int = 0,
) -> AccuracyEstimate:
    """Estimate the accuracy of rows with these top-1 confidences, with a bootstrap interval.

    ``familiar`` marks the rows that look like held-out data (see :func:`familiar_rows`). The
    calibration holds only for those: a model is often sure and wrong on inputs unlike anything
    it was validated on (an inverted image). Held-out data itself has ``expected_unfamiliar`` of
    its rows flagged, so only the share beyond that is counted at ``chance`` (1 / number of
    classes) in the estimate, and anywhere from 0 to 1 in its interval.

    Raises:
        ValueError: no rows, or ``binned`` asked of a calibration without bins (older releases).
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.size == 0:
        raise ValueError("no rows to estimate the accuracy of")
    if estimator == "binned" and not calibration.bin_accuracy:
        raise ValueError("this release's calibration has no confidence bins: use the atc estimator")
    familiar = np.ones(confidence.size, dtype=bool) if familiar is None else np.asarray(familiar, dtype=bool)
    known = confidence[familiar]
    share = known.size / confidence.size
    edges = np.asarray(calibration.bin_edges)

    def estimate(values: np.ndarray, fit: int | None) -> float:
        if values.size == 0:
            return 0.0
        if estimator == "atc":
            threshold = calibration.threshold if fit is None else calibration.bootstrap_thresholds[fit]
            return float(np.mean(values > threshold))
        accuracy_ = calibration.bin_accuracy if fit is None else calibration.bootstrap_bin_accuracy[fit]
        return float(np.mean(np.asarray(accuracy_)[np.searchsorted(edges, values, side="right")]))

    fits = len(calibration.bootstrap_thresholds if estimator == "atc" else calibration.bootstrap_bin_accuracy)
    rng = np.random.default_rng(seed)
    point = estimate(known, None)
    if known.size and fits:
        # Capped resamples keep a 50k-row run fast; for larger windows they make the interval a little wider, not narrower.
        size = min(known.size, 20_000)
        estimates = np.array([estimate(known[rng.integers(0, known.size, size=size)], fit) for fit in range(fits)])
        tail = (1.0 - level) / 2.0
        low, high = (float(q) for q in np.quantile(estimates, [tail, 1.0 - tail]))
    else:
        low = high = point
    low, high = min(low, point), max(high, point)
    excess = max(0.0, (1.0 - share) - expected_unfamiliar)
    return AccuracyEstimate(
        estimator=estimator,
        accuracy=(1.0 - excess) * point + excess * chance,
        low=(1.0 - excess) * low,
        high=(1.0 - excess) * high + excess,
        high_at_chance=(1.0 - excess) * high + excess * chance,
        reference_accuracy=calibration.accuracy,
        rows=int(confidence.size),
        unfamiliar_share=1.0 - share,
    )


def familiar_rows(reference: np.ndarray, current: np.ndarray, quantile: float = 0.99) -> np.ndarray:
    """Which ``current`` rows lie as close to the reference as held-out rows lie to each other.

    A row is familiar when its distance to the nearest reference row (features scaled by the
    reference's spread) is within the ``quantile`` of the reference rows' own leave-one-out
    nearest-neighbour distances: in distribution, about ``quantile`` of rows are familiar.
    """
    from sklearn.neighbors import NearestNeighbors

    spread = reference.std(axis=0)
    spread[spread == 0] = 1.0
    ref, cur = reference / spread, current / spread
    if len(ref) < 3:
        return np.ones(len(cur), dtype=bool)
    index = NearestNeighbors(n_neighbors=2).fit(ref)
    own = index.kneighbors(ref, n_neighbors=2)[0][:, 1]
    limit = float(np.quantile(own, quantile))
    return index.kneighbors(cur, n_neighbors=1)[0][:, 0] <= limit

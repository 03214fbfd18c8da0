"""Models of another family fitted on the same split, reported beside the variants: the honest comparison.

A tabular user's first question is how the network compares with gradient-boosted trees, so a
table build also fits scikit-learn's ``HistGradientBoostingClassifier`` on the same train split
(the contract's raw encoding: numbers with NaN for missing, categories as categories) and
measures it on the same test split, at the same batch sizes and threads as every variant.
It is reported, not released: the served variant is chosen among the network's variants.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import BaseModel, Field

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.config import LatencyConfig
from tasks.export.measure import macro_f1

# HistGradientBoosting bins a categorical feature's codes into at most 255 bins.
MAX_TREE_CATEGORIES = 255


class ReferenceModel(BaseModel):
    """A model of another family, measured on the release's test split."""

    name: str = Field(description="e.g. HistGradientBoostingClassifier")
    library: str = Field(description="Library and version that fitted it")
    accuracy: float
    macro_f1: float
    p50_ms_b1: float = Field(description="Median predict_proba time of one row, at the variants' thread count")
    p50_ms_bn: float = Field(description="The same for a batch of the variants' batch_n rows")
    fit_seconds: float


def fit_reference_models(
    snapshot: DatasetSnapshot, latency: LatencyConfig, seed: int = 0
) -> tuple[list[ReferenceModel], list[str]]:
    """The reference models of a snapshot's modality (tables: gradient-boosted trees; images: none), and why any is missing.

    A reference that cannot be fitted is left out with the reason: it is reported, never released,
    so it never fails a build.
    """
    if snapshot.input.kind != "tabular":
        return [], []
    import sklearn
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    # Trees fit on arrays in memory: a table's rows are a few numbers each (a million rows of 20 columns: 160 MB).
    (train, train_labels), (test, test_labels) = ((np.asarray(raw), labels) for raw, labels in map(snapshot.arrays, ("train", "test")))
    categorical = np.array(
        [c.type == "categorical" and len(c.categories) <= MAX_TREE_CATEGORIES for c in snapshot.input.columns], dtype=bool
    )

    def prepared(raw: np.ndarray) -> np.ndarray:
        # A new category (code -1) is unknown to the trees as to the network: missing.
        return np.where(categorical[None, :] & (raw < 0), np.nan, raw)

    # Early stopping holds out a stratified tenth: a class with one train row cannot be split so.
    few = np.bincount(train_labels).min(initial=0) < 2 if len(train_labels) else True
    model = HistGradientBoostingClassifier(
        categorical_features=categorical if categorical.any() else None, random_state=seed,
        early_stopping=False if few else "auto",
    )
    with threadpool_limits(latency.threads):
        started = time.perf_counter()
        try:
            model.fit(prepared(train), train_labels)
        except ValueError as exc:
            return [], [f"HistGradientBoostingClassifier reference not fitted: {exc}"]
        fit_seconds = time.perf_counter() - started
        predicted = model.predict(prepared(test)) if len(test) else np.zeros(0, np.int64)
        b1 = _p50_ms(model, prepared(test), 1, latency.repeats, latency.warmup)
        bn = _p50_ms(model, prepared(test), latency.batch_n, max(latency.repeats // 4, 3), max(latency.warmup // 2, 1))
    return [
        ReferenceModel(
            name="HistGradientBoostingClassifier",
            library=f"scikit-learn {sklearn.__version__}",
            accuracy=float(np.mean(predicted == test_labels)) if len(test_labels) else 0.0,
            macro_f1=macro_f1(test_labels, predicted),
            p50_ms_b1=b1,
            p50_ms_bn=bn,
            fit_seconds=fit_seconds,
        )
    ], []


def _p50_ms(model: object, rows: np.ndarray, batch_size: int, repeats: int, warmup: int) -> float:
    """Median milliseconds of ``predict_proba`` on ``batch_size`` rows (cycled from ``rows``)."""
    if not len(rows):
        return float("nan")
    batch = rows[np.arange(batch_size) % len(rows)]
    for _ in range(warmup):
        model.predict_proba(batch)  # type: ignore[attr-defined]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict_proba(batch)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - started) * 1e3)
    return float(np.median(times))

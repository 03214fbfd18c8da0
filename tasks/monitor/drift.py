"""Drift of a production window against the release's reference: two-sample tests with a stated false-alarm rate.

Why two-sample tests: the reference is a sample too. A goodness-of-fit test that takes the
reference's proportions as exact flags almost every clean window once windows are large (the
reference's own sampling noise becomes "drift"); a two-sample test's level holds at any window
size, because under no drift the window and the reference are exchangeable.

- per numerical column: Kolmogorov-Smirnov (SciPy), with the normalised Wasserstein distance as
  the effect size;
- the predicted class: chi-square on the 2 x K table of reference and window counts (SciPy),
  with the Jensen-Shannon distance as the effect size;
- the embedding, all components at once: MMD with an RBF kernel and a permutation test, so a
  shift of part of the window that no single column shows is still caught;
- the share of novel rows (unlike every reference row on all numerical columns): split-conformal
  nearest-neighbour scores with an exact beta-binomial null, for a few far-away rows;
- Bonferroni over all of them: one run flags in-distribution data at most ``false_alarm_rate``
  of the time.

The verdict also estimates, without labels, the accuracy the served model gets on the window
(``tasks.monitor.estimate``) and says whether the drift is likely harmful. The Evidently report
(per-column distributions) is written separately by :func:`write_drift_report`, opening with
the verdict.
"""

from __future__ import annotations

import html as html_escape
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.errors import LeptonError
from tasks.monitor.config import DriftConfig
from tasks.monitor.estimate import AccuracyEstimate, estimate_accuracy, familiar_rows
from tasks.registry.manifest import AccuracyCalibration
from tasks.score.features import off_schema_summary

TWO_SAMPLE_CHI2 = "chi2_two_sample"
PREDICTED_CLASS = "predicted_class"
# A window row's embedding is familiar when it is as close to the reference as this share of reference rows are to each other.
FAMILIAR_QUANTILE = 0.99


class ColumnDrift(BaseModel):
    """One column's two-sample test."""

    column: str
    test: str
    p_value: float
    effect: float
    effect_name: str
    level: float
    drifted: bool


class EmbeddingDrift(BaseModel):
    """The multivariate test of the projected embedding."""

    test: str = "MMD, RBF kernel (median bandwidth), permutation test"
    columns: list[str]
    statistic: float
    p_value: float
    level: float
    rows: int
    permutations: int
    drifted: bool


class NoveltyDrift(BaseModel):
    """How many window rows are unlike every reference row, against what exchangeable data would give."""

    test: str = "novel rows: split-conformal nearest-neighbour score, beta-binomial null"
    columns: list[str]
    share: float
    expected_share: float
    p_value: float
    level: float
    rows: int
    drifted: bool


class DriftResult(BaseModel):
    """The verdict of one monitoring run."""

    status: Literal["drift", "no drift", "not enough data"]
    rows: int
    rows_tested: int
    reference_rows: int
    false_alarm_rate: float
    drift_share: float | None = None
    off_schema_rows: int = 0  # table rows whose cells did not fit the release's schema (new category, text for a number)
    drifted_columns: list[str] = []
    prediction_drift: bool = False
    columns: list[ColumnDrift] = []
    embedding: EmbeddingDrift | None = None
    novelty: list[NoveltyDrift] = []
    estimate: AccuracyEstimate | None = None
    harmful: bool | None = None
    quarantined: list[str] = []
    notes: list[str] = []
    detail: str = ""

    @property
    def drift(self) -> bool:
        return self.status == "drift"

    def headline(self) -> str:
        """One line: the decision, what drifted, the estimated accuracy, harm."""
        if self.status == "not enough data":
            return f"NOT ENOUGH DATA: {self.detail}"
        parts = [self.status.upper()]
        what = list(self.drifted_columns) + (["embedding (MMD)"] if self.embedding and self.embedding.drifted else [])
        what += [f"{n.share:.0%} novel rows (expected {n.expected_share:.0%})" for n in self.novelty if n.drifted]
        if what:
            parts.append(f"drifted: {', '.join(what)}")
        if self.off_schema_rows:
            parts.append(f"{self.off_schema_rows} of {self.rows} rows off the schema")
        if self.estimate is not None:
            parts.append(self.estimate.describe())
        if self.harmful is not None and self.drift:
            parts.append("likely HARMFUL" if self.harmful else "no harm estimated")
        return " - ".join(parts)


def reference_rows(reference: pd.DataFrame, splits: list[str]) -> pd.DataFrame:
    """The rows of the reference file that drift is tested against (those of ``splits``)."""
    if "split" not in reference.columns:
        return reference
    return reference.loc[reference["split"].isin(splits)].reset_index(drop=True)


MIN_REFERENCE_ROWS = 20


class ReferenceTooSmall(LeptonError):
    """The release's reference has too few usable rows to test a window against."""


@dataclass(frozen=True)
class PreparedWindow:
    """The rows the tests see: both frames without non-finite rows, the tested sample, what was left out."""

    reference: pd.DataFrame
    current: pd.DataFrame
    tested: pd.DataFrame
    numerical: list[str]
    quarantined: list[str]


def prepare_window(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    config: DriftConfig,
    optional: Sequence[str] = (),
) -> PreparedWindow:
    """Check the columns, leave out non-finite values (saying so), and draw the seeded sample the tests use.

    ``optional`` columns may be NaN in a row that did not measure them (an image sent to the
    server as a tensor has no size on disk): such a row is kept, and those columns are tested on
    the rows that measured them. A NaN anywhere else, or an infinity anywhere, leaves the row out.
    The drift verdict and its report both call this, so the report's per-column tests run on
    exactly the rows the verdict tested.

    Raises:
        ValueError: a column missing from either frame.
        ReferenceTooSmall: fewer than 20 usable reference rows.
    """
    for name, frame in (("reference", reference), ("current", current)):
        missing = [c for c in numerical + categorical if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} data lacks monitoring columns {missing}")
    quarantined = []
    values = reference[numerical].to_numpy(dtype=np.float64) if len(reference) else np.zeros((0, len(numerical)))
    broken = [c for c, ok in zip(numerical, np.isfinite(values).any(axis=0)) if not ok] if len(reference) else []
    if broken:
        quarantined.append(f"columns {broken} are NaN or infinite in every reference row: not tested")
    usable = [c for c in numerical if c not in broken]
    current, dropped = _finite(current, usable, optional)
    if dropped:
        quarantined.append(f"{dropped} window rows with a NaN or infinite value left out")
    unmeasured = [c for c in usable if c in optional and len(current) and current[c].isna().any()]
    if unmeasured:
        rows = int(current[unmeasured].isna().any(axis=1).sum())
        quarantined.append(
            f"{rows} window rows do not measure {unmeasured} (a missing value, or an image sent as a tensor): those columns are tested on the "
            f"{len(current) - rows} rows that do"
        )
    reference, dropped = _finite(reference, usable, optional)
    if dropped:
        quarantined.append(f"{dropped} reference rows with a NaN or infinite value left out")
    if len(reference) < MIN_REFERENCE_ROWS:
        raise ReferenceTooSmall(
            f"the reference has {len(reference)} usable rows; at least {MIN_REFERENCE_ROWS} are needed to test a window "
            "(build the release from more validation and test data)"
        )
    tested = current
    if len(current) > config.sample_rows:
        pick = np.random.default_rng(config.seed).choice(len(current), size=config.sample_rows, replace=False)
        tested = current.iloc[np.sort(pick)].reset_index(drop=True)
    return PreparedWindow(reference, current, tested, usable, quarantined)


def detect_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    config: DriftConfig,
    calibration: AccuracyCalibration | None = None,
    embedding: list[str] | None = None,
    num_classes: int | None = None,
    optional: Sequence[str] = (),
) -> DriftResult:
    """Test ``current`` against ``reference`` on the given columns.

    ``embedding`` names the columns of the multivariate test (default: the numerical columns
    named ``embedding_*``). Rows with a NaN or infinite value are left out and reported in
    ``quarantined``. ``num_classes`` (default: the predicted classes seen in the reference) sets
    the chance accuracy unfamiliar rows are counted at. ``optional`` columns may be unmeasured
    (NaN) in some rows; see :func:`prepare_window`.

    Raises:
        ValueError: a column missing from either frame.
        ReferenceTooSmall: fewer than 20 usable reference rows.
    """
    # Counted on every window row, before any is left out: a row off the schema is news even in a small window.
    off_schema, off_schema_note = off_schema_summary(current)
    prepared = prepare_window(reference, current, numerical, categorical, config, optional)
    reference, current, tested, numerical = prepared.reference, prepared.current, prepared.tested, prepared.numerical
    columns = numerical + categorical
    measured = [c for c in numerical if tested[c].notna().any()]
    if not columns:
        raise ReferenceTooSmall(f"no monitoring column is usable: {'; '.join(prepared.quarantined) or 'none given'}")
    embedding = [c for c in numerical if c.startswith("embedding_")] if embedding is None else [c for c in embedding if c in numerical]
    base = dict(
        rows=len(current), reference_rows=len(reference), false_alarm_rate=config.false_alarm_rate,
        quarantined=prepared.quarantined, off_schema_rows=off_schema,
    )
    if len(current) < config.min_rows:
        return DriftResult(
            status="not enough data", rows_tested=0, notes=[off_schema_note] if off_schema else [],
            detail=f"{len(current)} usable rows in the window; at least {config.min_rows} are needed for a verdict", **base,
        )
    rng = np.random.default_rng([config.seed, 1])
    level = config.column_level(len(columns))
    results = [_numerical_test(reference[c].dropna(), tested[c].dropna(), c, level) for c in measured]
    results += [_categorical_test(reference[c], tested[c], c, level) for c in categorical]
    multivariate = None
    if embedding and config.embedding_share > 0:
        multivariate = _embedding_test(reference[embedding], current[embedding], embedding, config, rng)
    novelty, skipped = [], []
    if config.novelty_share > 0:
        # Two views, half the budget each: every statistic (a dimmed or noisy image), and the model's
        # own embedding (a rotated digit keeps its statistics but not its place in the embedding).
        views = [[c for c in numerical if tested[c].notna().all() and reference[c].notna().all()]] + (
            [embedding] if embedding else []
        )
        for view in views:
            outcome = novelty_test(
                reference[view].to_numpy(np.float64), tested[view].to_numpy(np.float64), view,
                config.novelty_tail, config.novelty_level / len(views), rng,
            )
            if outcome is None:  # the reference is too small for the tail: the same for every view
                skipped = [f"novel-row test not run: {len(reference)} reference rows are too few for novelty_tail={config.novelty_tail}"]
                break
            novelty.append(outcome)
    drifted = [r.column for r in results if r.drifted]
    prediction = any(r.drifted for r in results if r.column == PREDICTED_CLASS)
    is_drift = bool(drifted) or bool(multivariate and multivariate.drifted) or any(n.drifted for n in novelty)
    estimate = harmful = None
    if calibration is not None and "confidence" in current.columns:
        estimator = config.accuracy_estimator if calibration.bin_accuracy else "atc"
        familiar = None
        if embedding:
            familiar = familiar_rows(
                reference[embedding].to_numpy(dtype=np.float64), current[embedding].to_numpy(dtype=np.float64), FAMILIAR_QUANTILE
            )
        if num_classes is None and PREDICTED_CLASS in reference.columns:
            num_classes = reference[PREDICTED_CLASS].nunique()
        chance = 1.0 / num_classes if num_classes else 0.0
        estimate = estimate_accuracy(
            calibration, current["confidence"].to_numpy(), estimator, familiar, chance, 1.0 - FAMILIAR_QUANTILE, seed=config.seed
        )
        # Harmful: the estimate lost at least harm_pp, and even its interval's top (unfamiliar rows at
        # chance, as in the estimate) is below the held-out accuracy: not the noise of a small window.
        harmful = estimate.drop_pp >= config.harm_pp and estimate.high_at_chance < estimate.reference_accuracy
    notes = _notes(current, categorical) + skipped + ([off_schema_note] if off_schema else [])
    if len(measured) < len(numerical):
        notes.append(f"not tested: no window row measures {[c for c in numerical if c not in measured]}")
    detail = (
        f"{len(drifted)} of {len(columns)} columns drifted at p < {level:.2g} each"
        + (f"; embedding MMD p = {multivariate.p_value:.3g} (level {multivariate.level:.2g})" if multivariate else "")
        + "".join(
            f"; {n.share:.1%} novel rows ({'embedding' if n.columns == embedding else 'all columns'}) vs "
            f"{n.expected_share:.1%} expected, p = {n.p_value:.3g} (level {n.level:.2g})"
            for n in novelty
        )
        + f"; false-alarm rate of this run {config.false_alarm_rate:.1%}"
    )
    return DriftResult(
        status="drift" if is_drift else "no drift",
        rows_tested=len(tested),
        drift_share=len(drifted) / len(columns),
        drifted_columns=drifted,
        prediction_drift=prediction,
        columns=results,
        embedding=multivariate,
        novelty=novelty,
        estimate=estimate,
        harmful=harmful,
        notes=notes,
        detail=detail,
        **base,
    )


def _finite(frame: pd.DataFrame, numerical: list[str], optional: Sequence[str] = ()) -> tuple[pd.DataFrame, int]:
    """The rows without NaN/inf in ``numerical`` (NaN allowed in ``optional``), and how many were dropped."""
    if frame.empty:
        return frame, 0
    values = frame[numerical].to_numpy(dtype=np.float64)
    unmeasured = np.isnan(values) & np.isin(np.asarray(numerical), list(optional))[None, :]
    keep = (np.isfinite(values) | unmeasured).all(axis=1)
    return frame.loc[keep].reset_index(drop=True), int((~keep).sum())


def _numerical_test(reference: pd.Series, current: pd.Series, column: str, level: float) -> ColumnDrift:
    from scipy.stats import ks_2samp, wasserstein_distance

    ref, cur = reference.to_numpy(dtype=np.float64), current.to_numpy(dtype=np.float64)
    p_value = float(ks_2samp(ref, cur).pvalue)
    # Evidently's normalised Wasserstein: the distance in units of the reference's spread.
    spread = float(np.std(ref)) or 1.0
    effect = float(wasserstein_distance(ref, cur)) / spread
    return ColumnDrift(
        column=column, test="KS two-sample", p_value=p_value, effect=effect, effect_name="Wasserstein / std",
        level=level, drifted=p_value < level,
    )


def chi2_two_sample(reference: pd.Series, current: pd.Series) -> tuple[float, float]:
    """p-value and Jensen-Shannon distance of two samples of a categorical column.

    Categories are pooled (rarest first, into bins) until every expected cell of the 2 x K table
    is at least 5, where the chi-square approximation holds; with a small window next to a large
    reference, that is what keeps the test at its level.
    """
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import chi2_contingency

    ref, cur = reference.astype(str).value_counts(), current.astype(str).value_counts()
    table = pd.concat([ref, cur], axis=1).fillna(0).to_numpy(dtype=np.float64).T
    effect = float(jensenshannon(table[0] / table[0].sum(), table[1] / table[1].sum(), base=2))
    rows = table.sum(axis=1)
    # A column's smallest expected cell is (its total) x (the smaller row total) / N.
    needed = 5.0 * table.sum() / rows.min()
    totals = table.sum(axis=0)
    # Rarest first, categories fill "other" bins until each is big enough: several bins, so a
    # window of only rare classes still differs. Bins depend on the totals only: the level holds.
    columns, current = [], np.zeros(2)
    for index in np.argsort(totals, kind="stable"):
        current = current + table[:, index]
        if current.sum() >= needed:
            columns.append(current)
            current = np.zeros(2)
    if current.sum() > 0:
        if columns:
            columns[-1] = columns[-1] + current  # the last, too small alone: into the previous bin
        else:
            columns.append(current)
    if len(columns) < 2:
        return 1.0, effect
    return float(chi2_contingency(np.column_stack(columns), correction=False).pvalue), effect


def _categorical_test(reference: pd.Series, current: pd.Series, column: str, level: float) -> ColumnDrift:
    p_value, effect = chi2_two_sample(reference, current)
    return ColumnDrift(
        column=column, test="chi-square two-sample", p_value=p_value, effect=effect, effect_name="Jensen-Shannon",
        level=level, drifted=p_value < level,
    )


def mmd_permutation_test(
    reference: np.ndarray, current: np.ndarray, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Squared MMD (biased estimate) of two samples and its permutation p-value.

    Features are scaled by the reference's spread; the RBF bandwidth is the median distance
    between reference rows. The kernel matrix is computed once and each permutation is a
    quadratic form of it, so 500 permutations of 2,000 rows take a fraction of a second.
    """
    from sklearn.metrics.pairwise import euclidean_distances, rbf_kernel

    spread = reference.std(axis=0)
    spread[spread == 0] = 1.0
    both = np.vstack([reference, current]).astype(np.float64) / spread
    m = len(reference)
    distances = euclidean_distances(both[:m], both[:m])
    median = float(np.median(distances[np.triu_indices(m, 1)])) if m > 1 else 1.0
    kernel = rbf_kernel(both, gamma=1.0 / (2.0 * (median or 1.0) ** 2))
    weights = np.concatenate([np.full(m, 1.0 / m), np.full(len(current), -1.0 / len(current))])
    permuted = np.stack([rng.permutation(weights) for _ in range(permutations)], axis=1)
    observed = float(weights @ kernel @ weights)
    null = np.einsum("ip,ip->p", permuted, kernel @ permuted)
    return observed, float((1 + np.sum(null >= observed - 1e-12)) / (permutations + 1))


def novelty_test(
    reference: np.ndarray, current: np.ndarray, columns: list[str], tail: float, level: float, rng: np.random.Generator
) -> NoveltyDrift | None:
    """Is the share of window rows unlike every reference row larger than exchangeable data would give?

    Split conformal: half the reference rows define the score (distance to the nearest of them,
    features scaled by their spread), the other half calibrate it. A window row is novel when its
    score exceeds the k-th largest calibration score, k = floor(tail * (calibration rows + 1)). For
    exchangeable data the chance of that is Beta(k, m - k + 1) distributed (m calibration rows), so
    the number of novel rows among n is beta-binomial: an exact test at any window size, which the
    sampling noise of a small reference makes conservative rather than wrong. A few far-away rows
    (5 % of a window inverted, rotated or noisy) move it long before any single column moves.
    None when the reference is too small for the tail (fewer than 1 / tail calibration rows).
    """
    from scipy.stats import betabinom
    from sklearn.neighbors import NearestNeighbors

    order = rng.permutation(len(reference))
    half = len(reference) // 2
    fit, calibrate = reference[order[:half]], reference[order[half:]]
    k = int(np.floor(tail * (len(calibrate) + 1)))
    if half < 2 or k < 1 or not columns:
        return None
    spread = fit.std(axis=0)
    spread[spread == 0] = 1.0
    index = NearestNeighbors(n_neighbors=1).fit(fit / spread)
    calibration = np.sort(index.kneighbors(calibrate / spread)[0][:, 0])
    threshold = calibration[-k]
    novel = int(np.sum(index.kneighbors(current / spread)[0][:, 0] > threshold))
    m = len(calibrate)
    p_value = float(betabinom.sf(novel - 1, len(current), k, m - k + 1))
    return NoveltyDrift(
        columns=columns, share=novel / len(current), expected_share=k / (m + 1), p_value=p_value, level=level,
        rows=len(current), drifted=p_value < level,
    )


def _embedding_test(
    reference: pd.DataFrame, current: pd.DataFrame, columns: list[str], config: DriftConfig, rng: np.random.Generator
) -> EmbeddingDrift:
    ref, cur = reference.to_numpy(dtype=np.float64), current.to_numpy(dtype=np.float64)
    if len(ref) > config.embedding_rows:
        ref = ref[np.sort(rng.choice(len(ref), size=config.embedding_rows, replace=False))]
    if len(cur) > config.embedding_rows:
        cur = cur[np.sort(rng.choice(len(cur), size=config.embedding_rows, replace=False))]
    statistic, p_value = mmd_permutation_test(ref, cur, config.permutations, rng)
    return EmbeddingDrift(
        columns=columns, statistic=statistic, p_value=p_value, level=config.embedding_level, rows=len(cur),
        permutations=config.permutations, drifted=p_value < config.embedding_level,
    )


def _notes(current: pd.DataFrame, categorical: list[str]) -> list[str]:
    """What a reader should know about the window itself."""
    notes = []
    for column in categorical:
        values = current[column].astype(str).unique()
        if len(values) == 1:
            notes.append(f"every row of the window has {column} = {values[0]!r}")
    return notes


def write_drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    result: DriftResult,
    title: str,
    html_path: Path,
    config: DriftConfig,
    optional: Sequence[str] = (),
) -> Path:
    """Evidently's per-column report of the same tests, opened by the verdict; returns ``html_path``.

    Evidently runs the same SciPy tests at the same levels on the same rows (the two-sample
    chi-square is registered with it; :func:`prepare_window` draws the same sample), so its
    per-column pass/fail agrees with the verdict above it.
    """
    import warnings

    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    _register_chi2_two_sample()
    prepared = prepare_window(reference, current, numerical, categorical, config, optional)
    level = config.column_level(len(prepared.numerical + categorical))
    # Evidently drops a column's NaN (unmeasured) values itself; a column no window row measures is left out.
    numerical = [c for c in prepared.numerical if prepared.tested[c].notna().any()]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    metrics = [ValueDrift(column=c, method="ks", threshold=level) for c in numerical] + [
        ValueDrift(column=c, method=TWO_SAMPLE_CHI2, threshold=level) for c in categorical
    ]
    columns = numerical + categorical
    with warnings.catch_warnings():
        # Constant columns (all images one size) make numpy warn inside the distribution plots.
        warnings.simplefilter("ignore", RuntimeWarning)
        snapshot = Report(metrics, include_tests=True).run(
            current_data=Dataset.from_pandas(prepared.tested[columns].reset_index(drop=True), data_definition=definition),
            reference_data=Dataset.from_pandas(prepared.reference[columns].reset_index(drop=True), data_definition=definition),
        )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(html_path))
    return prepend_to_body(html_path, verdict_html(result, title))


def prepend_to_body(html_path: Path, fragment: str) -> Path:
    """Put ``fragment`` first in the page's body (the verdict before Evidently's report)."""
    page = html_path.read_text(encoding="utf-8")
    at = page.find(">", page.find("<body")) + 1 if "<body" in page else 0
    html_path.write_text(page[:at] + fragment + page[at:], encoding="utf-8")
    return html_path


_registered = False


def _register_chi2_two_sample() -> None:
    """Make the two-sample chi-square available to Evidently by name (once per process)."""
    global _registered
    if _registered:
        return
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    def test(reference: pd.Series, current: pd.Series, feature_type: ColumnType, threshold: float) -> tuple[float, bool]:
        p_value, _ = chi2_two_sample(reference, current)
        return p_value, p_value < threshold

    register_stattest(
        StatTest(name=TWO_SAMPLE_CHI2, display_name="chi-square two-sample p_value", allowed_feature_types=[ColumnType.Categorical]),
        default_impl=test,
    )
    _registered = True


def verdict_html(result: DriftResult, title: str) -> str:
    """The decision first: drifted columns and share, the embedding test, estimated accuracy, harm."""
    e = html_escape.escape
    colour = {"drift": "#b00020", "no drift": "#1b5e20"}.get(result.status, "#555")
    lines = [f"<p><b>{e(result.detail)}</b></p>"] if result.detail else []
    if result.drift_share is not None:
        lines.append(
            f"<p>Drifted columns: {e(', '.join(result.drifted_columns) or 'none')} "
            f"({result.drift_share:.0%} of {len(result.columns)}); window {result.rows} rows "
            f"({result.rows_tested} tested), reference {result.reference_rows} rows.</p>"
        )
    if result.embedding is not None:
        m = result.embedding
        lines.append(
            f"<p>Embedding ({len(m.columns)} components, {m.rows} window rows): {e(m.test)}; MMD&sup2; {m.statistic:.4g}, "
            f"p = {m.p_value:.3g} at level {m.level:.2g}: <b>{'drifted' if m.drifted else 'no drift'}</b>.</p>"
        )
    for n in result.novelty:
        lines.append(
            f"<p>Novel rows ({len(n.columns)} columns, {n.rows} window rows): {n.share:.1%} unlike every reference row, "
            f"{n.expected_share:.1%} expected; {e(n.test)}; p = {n.p_value:.3g} at level {n.level:.2g}: "
            f"<b>{'drifted' if n.drifted else 'no drift'}</b>.</p>"
        )
    if result.estimate is not None:
        harm = "" if result.harmful is None else (" <b>Likely harmful.</b>" if result.harmful else " No harm estimated.")
        lines.append(f"<p>{e(result.estimate.describe())}.{harm}</p>")
    for note in result.quarantined + result.notes:
        lines.append(f"<p>Note: {e(note)}</p>")
    rows = "".join(
        f"<tr><td>{e(c.column)}</td><td>{e(c.test)}</td><td>{c.p_value:.3g}</td><td>{c.level:.2g}</td>"
        f"<td>{c.effect:.3g} ({e(c.effect_name)})</td><td>{'DRIFT' if c.drifted else 'ok'}</td></tr>"
        for c in result.columns
    )
    table = (
        "<table style='border-collapse:collapse' border='1' cellpadding='4'><tr><th>column</th><th>test</th>"
        f"<th>p-value</th><th>level</th><th>effect size</th><th>verdict</th></tr>{rows}</table>"
        if rows else ""
    )
    return (
        "<section id='lepton-verdict' style='font-family:sans-serif;margin:16px;padding:16px;"
        f"border:3px solid {colour}'><h1 style='color:{colour}'>{e(title)}: {e(result.status.upper())}</h1>"
        + "".join(lines) + table
        + "<p style='color:#555'>Below: Evidently's per-column distributions for the same tests.</p></section>"
    )

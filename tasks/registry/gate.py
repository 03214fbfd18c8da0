"""The release gate: may a candidate replace production? Both are scored on the candidate's test split, image by image.

A candidate must clear an absolute floor, be significantly better than always predicting the most
frequent class, and not be worse than production beyond the tolerance on the same images (a paired
comparison with its interval and McNemar's exact test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks.data.contract import InputContract
from tasks.export.backends import EVAL_BATCH
from tasks.export.measure import predicted_classes
from tasks.registry.config import GateConfig
from tasks.registry.release import read_manifest
from tasks.registry.serving import fetch_release, production_version
from tasks.registry.store import ArtifactStore


class ProductionScore(BaseModel):
    """Production's accuracy on the candidate's test split (and which images it got right), or why not measured."""

    version: str | None = None
    accuracy: float | None = None
    correct: list[bool] | None = None
    comparable: bool = True
    note: str = ""


def score_production(
    store: ArtifactStore,
    model: str,
    contract: InputContract,
    raw: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    work_dir: Path,
) -> ProductionScore:
    """Production's served variant (downloaded, sha256-verified) measured on the candidate's test split.

    ``raw`` are the split's inputs as the candidate's input contract decoded them; production's
    contract prepares them (a table's rows are re-encoded through their values: each build fits
    its own categories and statistics). Production is incomparable when it was trained on other
    classes or cannot take these inputs; the gate then decides by its own setting.
    """
    version = production_version(store, model)
    if version is None:
        return ProductionScore(note="no production release yet")
    manifest = read_manifest(store, model, version)
    if manifest.classes != classes:
        return ProductionScore(
            version=version,
            comparable=False,
            note=f"production classes {manifest.classes} differ from the candidate's {classes}",
        )
    why = manifest.input.incomparable(contract)
    if why is not None:
        return ProductionScore(version=version, comparable=False, note=f"production cannot be measured here: {why}")
    # Compared first, then only the served variant is downloaded (verified): the gate needs nothing else.
    production = fetch_release(store, model, version, work_dir, monitoring=False, manifest=manifest)
    backend, batch = production.open(), EVAL_BATCH
    # A batch at a time: the split stays on disk and may be larger than memory.
    predicted = [
        predicted_classes(backend, manifest.input.to_model_input(manifest.input.adopt(contract, np.asarray(raw[i : i + batch]))))
        for i in range(0, len(raw), batch)
    ]
    correct = (np.concatenate(predicted) if predicted else np.zeros(0, np.int64)) == labels
    return ProductionScore(version=production.version, accuracy=float(correct.mean()), correct=correct.tolist())


class PairedComparison(BaseModel):
    """Candidate vs production on the same test examples: the difference, its interval, McNemar's exact test."""

    images: int
    candidate_accuracy: float
    production_accuracy: float
    difference_pp: float
    low_pp: float
    high_pp: float
    candidate_only: int
    production_only: int
    mcnemar_p: float

    def describe(self) -> str:
        return (
            f"candidate {self.candidate_accuracy:.4f} vs production {self.production_accuracy:.4f} on the same "
            f"{self.images} test examples: difference {self.difference_pp:+.2f} pp (95 % interval {self.low_pp:+.2f} to "
            f"{self.high_pp:+.2f} pp; {self.candidate_only} right only by the candidate, {self.production_only} only by "
            f"production, McNemar exact p = {self.mcnemar_p:.3g})"
        )


def compare_paired(candidate: np.ndarray, production: np.ndarray, level: float = 0.95, seed: int = 0) -> PairedComparison:
    """Paired comparison of two models' per-image correctness on the same images.

    The interval of the accuracy difference is a paired percentile bootstrap (SciPy); McNemar's
    exact test is the binomial test of the discordant pairs.

    Raises:
        ValueError: arrays of different lengths, or no images.
    """
    from scipy.stats import binomtest, bootstrap

    candidate, production = np.asarray(candidate, dtype=bool), np.asarray(production, dtype=bool)
    if candidate.shape != production.shape or candidate.size == 0:
        raise ValueError(f"need per-image correctness of both models on the same images, got {candidate.shape} and {production.shape}")
    differences = candidate.astype(np.float64) - production.astype(np.float64)
    only_candidate, only_production = int(np.sum(differences > 0)), int(np.sum(differences < 0))
    if only_candidate + only_production == 0:
        low = high = 0.0  # the two agree on every image: no resample can differ
        p_value = 1.0
    else:
        interval = bootstrap(
            (differences,), np.mean, confidence_level=level, n_resamples=4000, method="percentile",
            random_state=np.random.default_rng(seed),
        ).confidence_interval
        low, high = float(interval.low), float(interval.high)
        p_value = float(binomtest(only_candidate, only_candidate + only_production, 0.5).pvalue)
    return PairedComparison(
        images=int(candidate.size),
        candidate_accuracy=float(candidate.mean()),
        production_accuracy=float(production.mean()),
        difference_pp=float(differences.mean()) * 100.0,
        low_pp=low * 100.0,
        high_pp=high * 100.0,
        candidate_only=only_candidate,
        production_only=only_production,
        mcnemar_p=p_value,
    )


class BaselineCheck(BaseModel):
    """Is the candidate better than always predicting the test split's most frequent class?"""

    images: int
    accuracy: float
    majority_accuracy: float
    p_value: float
    passed: bool

    def describe(self) -> str:
        return (
            f"accuracy {self.accuracy:.4f} on {self.images} test examples vs {self.majority_accuracy:.4f} by always "
            f"predicting the most frequent class (one-sided binomial p = {self.p_value:.3g})"
        )


def check_baseline(correct: np.ndarray, labels: np.ndarray, significance: float) -> BaselineCheck:
    """One-sided binomial test that the accuracy beats the majority-class baseline of the same images."""
    from scipy.stats import binomtest

    correct = np.asarray(correct, dtype=bool)
    if correct.size == 0:
        return BaselineCheck(images=0, accuracy=0.0, majority_accuracy=1.0, p_value=1.0, passed=False)
    majority = float(np.bincount(np.asarray(labels)).max() / len(labels))
    hits = int(correct.sum())
    p_value = 1.0 if majority >= 1.0 else float(binomtest(hits, correct.size, majority, alternative="greater").pvalue)
    return BaselineCheck(
        images=int(correct.size), accuracy=float(correct.mean()), majority_accuracy=majority, p_value=p_value,
        passed=p_value < significance,
    )


class GateDecision(BaseModel):
    """The verdict, a sentence saying why, and the numbers it rests on."""

    promote: bool
    reason: str
    candidate_accuracy: float
    production_accuracy: float | None = None
    production_version: str | None = None
    test_images: int | None = None
    baseline: BaselineCheck | None = None
    comparison: PairedComparison | None = None
    warnings: list[str] = []


def decide(
    candidate_correct: np.ndarray,
    labels: np.ndarray,
    production: ProductionScore,
    config: GateConfig,
    candidate_version: str | None = None,
) -> GateDecision:
    """The gate for a candidate, given its per-image correctness on its test split and production's on the same images.

    In order: the absolute floor, the majority-class baseline (significantly better), then, when
    a comparable production exists, the paired comparison: refused when the candidate is worse
    than production by more than ``tolerance_pp`` (significantly or not); a warning says when
    the test examples are too few for the interval to decide at that tolerance.
    """
    candidate_correct = np.asarray(candidate_correct, dtype=bool)
    images = int(candidate_correct.size)
    accuracy_ = float(candidate_correct.mean()) if images else 0.0
    base = dict(candidate_accuracy=accuracy_, production_version=production.version, test_images=images)
    if candidate_version is not None and production.version == candidate_version:
        return GateDecision(promote=False, reason=f"{candidate_version} is already production", **base)
    stays = f"; production stays {production.version}" if production.version else ""
    if accuracy_ < config.min_accuracy:
        return GateDecision(
            promote=False,
            reason=f"accuracy {accuracy_:.4f} on {images} test examples is below the floor min_accuracy={config.min_accuracy}{stays}",
            **base,
        )
    baseline = check_baseline(candidate_correct, labels, config.significance)
    base["baseline"] = baseline
    if not baseline.passed:
        return GateDecision(
            promote=False,
            reason=f"not significantly better than the majority-class baseline: {baseline.describe()}{stays}",
            **base,
        )
    if production.version is None:
        return GateDecision(promote=True, reason=f"no production release yet; {baseline.describe()}", **base)
    if not production.comparable or production.correct is None:
        return GateDecision(
            promote=config.promote_if_incomparable,
            reason=f"{production.note}; promote_if_incomparable={config.promote_if_incomparable}",
            **base,
        )
    comparison = compare_paired(candidate_correct, np.asarray(production.correct), 1.0 - config.significance, config.seed)
    tolerance = config.tolerance_pp
    warnings = []
    if comparison.low_pp < -tolerance <= comparison.high_pp:
        # The interval shrinks as 1/sqrt(images); it decides once its half-width is below the
        # distance from the estimate to -tolerance.
        # The side of the interval that reaches past -tolerance, against how far the estimate is from it.
        reach = comparison.difference_pp - comparison.low_pp if comparison.difference_pp >= -tolerance else (
            comparison.high_pp - comparison.difference_pp
        )
        distance = max(abs(comparison.difference_pp + tolerance), 0.05 * max(tolerance, 0.1))
        needed = max(images + 1, int(np.ceil(images * (reach / distance) ** 2)))
        warnings.append(
            f"{images} test examples are too few to decide at a {tolerance} pp tolerance: the interval "
            f"({comparison.low_pp:+.2f} to {comparison.high_pp:+.2f} pp) spans -{tolerance} pp; about {needed} would be needed"
        )
    if comparison.high_pp < -tolerance:
        promote, verdict = False, f"significantly worse beyond the {tolerance} pp tolerance than production"
    elif comparison.difference_pp < -tolerance:
        promote, verdict = False, f"worse (not significantly) beyond the {tolerance} pp tolerance than production"
    else:
        promote, verdict = True, f"not worse beyond the {tolerance} pp tolerance than production"
    return GateDecision(
        promote=promote,
        reason=f"{verdict} {production.version}: {comparison.describe()}",
        production_accuracy=comparison.production_accuracy,
        comparison=comparison,
        warnings=warnings,
        **base,
    )

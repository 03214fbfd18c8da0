"""Configuration of monitoring: what a release keeps as its reference, and how drift is tested."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from tasks.forms import FormModel


class ReferenceConfig(FormModel):
    """What a release keeps as its monitoring reference.

    The reference is the rows of the validation and test splits, which the model was not fitted
    on (validation rows only chose the checkpoint): production data can match them. Train rows
    cannot: the model is surer of what it trained on, and a reference with them flags clean data
    once windows are large.
    """

    embedding_components: int = Field(8, ge=1, le=64, description="PCA components kept of the model's embedding")
    batch_size: int = Field(256, ge=1, le=65_536, description="Images per inference call")
    seed: int = Field(0, description="Seed of the embedding projection: the same seed, the same reference")

    removed_fields: ClassVar[dict[str, str]] = {
        "train_sample": "the reference keeps the validation and test rows only (production data cannot match rows "
        "the model trained on); drop the setting"
    }


class DriftConfig(FormModel):
    """How drift is tested, and how often a window of in-distribution data may be flagged.

    Every test compares the window with the reference rows and is exact or conservative when the
    two are exchangeable, so its false-alarm rate holds at any window size: KS per numerical
    column, chi-square on the 2 x K table of predicted classes, MMD with a permutation test on the
    embedding, and the share of novel rows (split-conformal nearest-neighbour scores on every
    numerical column, beta-binomial null). ``false_alarm_rate`` is the budget of one run for all
    tests together (Bonferroni): ``embedding_share`` of it goes to the embedding test,
    ``novelty_share`` to the novelty test, the rest is split evenly over the columns. The rate is
    over releases: one release's reference is a fixed sample, and with windows much larger than it
    most references never alarm on clean data while a rare unlucky one alarms often. The drift
    sensitivity benchmark measures releases on fresh data; the retrain cool-down bounds what an
    unlucky one costs.
    """

    false_alarm_rate: float = Field(
        0.01, gt=0.0, le=0.2, description="Chance that one run flags a window of in-distribution data (all tests together)"
    )
    embedding_share: float = Field(
        0.4, ge=0.0, le=1.0, description="Share of the false-alarm rate spent on the multivariate embedding test"
    )
    novelty_share: float = Field(
        0.3, ge=0.0, le=1.0, description="Share of the false-alarm rate spent on the share of novel rows"
    )
    novelty_tail: float = Field(
        0.01, gt=0.0, lt=0.5, description="A row is novel when it is farther from the reference than this share of reference rows"
    )
    permutations: int = Field(500, ge=99, le=20_000, description="Permutations of the embedding test")
    embedding_rows: int = Field(1000, ge=50, le=20_000, description="Window rows in the embedding test (seeded sample)")
    sample_rows: int = Field(5000, ge=100, le=1_000_000, description="Window rows in the per-column tests (seeded sample)")
    min_rows: int = Field(100, ge=10, description="Fewer rows than this in the window: 'not enough data', no verdict")
    # ATC by default: in the drift sensitivity benchmark its worst error on global shifts was lower
    # (blurred shapes: 16 pp vs 49 pp); binned is exact when a shift only makes the model less sure.
    accuracy_estimator: Literal["atc", "binned"] = Field(
        "atc", description="Label-free accuracy estimate: atc (thresholded confidence) or binned (calibrated confidence)"
    )
    harm_pp: float = Field(
        2.0, ge=0.0, le=100.0, description="Estimated accuracy loss (pp) that makes drift harmful"
    )
    seed: int = Field(0, description="Seed of the sampling and permutation tests: the same window, the same verdict")

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: object) -> object:
        removed = {"drift_share", "prediction_drift_counts", "num_method", "cat_method", "threshold", "cat_threshold"}
        if isinstance(data, dict) and removed & set(data):
            raise ValueError(
                f"{sorted(removed & set(data))} were removed: drift is now decided by two-sample tests whose levels "
                "add up to false_alarm_rate (set that, and embedding_share / novelty_share to weigh the tests)"
            )
        return data

    @model_validator(mode="after")
    def _resolution(self) -> "DriftConfig":
        if self.embedding_share + self.novelty_share > 1.0:
            raise ValueError(
                f"embedding_share + novelty_share must be at most 1 (the rest goes to the per-column tests), got "
                f"{self.embedding_share} + {self.novelty_share}"
            )
        level = self.false_alarm_rate * self.embedding_share
        # The smallest permutation p-value is 1 / (permutations + 1): keep it at most half the level,
        # or a shift the test sees plainly could never reach significance.
        needed = math.ceil(2.0 / level) - 1 if level > 0 else 0
        if self.permutations < needed:
            raise ValueError(
                f"permutations={self.permutations} are too few for the embedding test's level {level:.4g}: "
                f"use at least {needed} permutations"
            )
        return self

    @property
    def embedding_level(self) -> float:
        """Significance level of the embedding test."""
        return self.false_alarm_rate * self.embedding_share

    @property
    def novelty_level(self) -> float:
        """Significance level of the novelty test."""
        return self.false_alarm_rate * self.novelty_share

    def column_level(self, columns: int) -> float:
        """Significance level of each per-column test (Bonferroni over ``columns``)."""
        return self.false_alarm_rate * (1.0 - self.embedding_share - self.novelty_share) / max(columns, 1)


class LabelRow(FormModel):
    """One label given inline (the feedback flow's parameter form): an input's id and its true class."""

    id: str = Field(min_length=1, description="The input's sha256 (as logged) or its logged file name")
    label: str = Field(min_length=1, description="The true class name")


class PerformanceConfig(FormModel):
    """When labelled production predictions count as a performance degradation."""

    significance: float = Field(0.05, gt=0.0, lt=0.5, description="Level of the one-sided test against the test accuracy")
    min_drop_pp: float = Field(1.0, ge=0.0, le=100.0, description="Smaller drops are not degradation, however significant")
    min_rows: int = Field(30, ge=1, description="Fewer labelled predictions than this: 'not enough labels', no verdict")

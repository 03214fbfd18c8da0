"""The one validated parameter of each flow; the Prefect UI renders each as a deployment's form.

Light on purpose: importing this module imports pydantic and the stages' config modules only
(no torch, Lightning, numpy or Prefect), so building a form or a deployment stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.compress.config import CompressConfig
from tasks.data.config import DataConfig
from tasks.explain.config import LimeConfig
from tasks.export.config import EvaluateConfig
from tasks.forms import FormModel
from tasks.monitor.config import DriftConfig, LabelRow, PerformanceConfig, ReferenceConfig
from tasks.registry.config import GateConfig, HostChoiceConfig, StoreConfig, validate_name
from tasks.train.config import TrainConfig


class RunnerConfig(FormModel):
    """Where a flow's independent tasks run (per-stage INT8, scoring shards, explanation batches).

    ``local`` runs them one after another in the flow's process. ``dask`` runs them in parallel
    through prefect-dask: on a LocalCluster of ``workers`` processes started for the run, or on the
    existing scheduler at ``address`` (its workers need this project installed and must see the
    work dir and the store: a shared volume, and an s3:// store).
    """

    kind: Literal["local", "dask"] = Field("local", description="local (in order, in this process) or dask")
    workers: int = Field(2, ge=1, le=1024, description="dask without an address: worker processes of the LocalCluster")
    threads_per_worker: int = Field(1, ge=1, le=256, description="dask without an address: threads of each worker")
    address: str | None = Field(
        None, description="dask: an existing scheduler, e.g. tcp://dask-scheduler:8786; empty starts a LocalCluster"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value and "://" not in value:
            raise ValueError(f"address {value!r}: a scheduler address such as tcp://host:8786")
        return value or None


class BuildConfig(FormModel):
    """Everything a build needs; the defaults build the embedded digits demo."""

    model_name: str = Field("digits-classifier", description="Registry name: a-z, 0-9, '.', '_', '-'")
    work_dir: Path = Field(Path(".lepton/work"), description="Local scratch: datasets, snapshots, runs, cache")
    reason: str = Field("manual", max_length=500, description="Why this build runs; recorded with the release")
    include_feedback: bool = Field(
        False, description="Also train on the model's labelled production inputs kept by the feedback flow"
    )
    cooldown_hours: float | None = Field(
        None, gt=0, le=24 * 30,
        description="Retrain at most once per N hours: skip this run if another claimed the model's period (set by triggers)",
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Where the data comes from (images or a table), how it is read and split")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The model and how it is trained")
    compress: CompressConfig = Field(default_factory=CompressConfig, description="Smaller and faster variants: distillation, pruning, INT8")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="How variants are measured and which one is served")
    reference: ReferenceConfig = Field(
        default_factory=ReferenceConfig, description="What the release keeps as its monitoring reference"
    )
    store: StoreConfig = Field(default_factory=StoreConfig, description="The registry: file://path or s3://bucket/prefix")
    gate: GateConfig = Field(default_factory=GateConfig, description="When the new release may replace production")
    runner: RunnerConfig = Field(
        default_factory=RunnerConfig, description="Where independent steps run (INT8 of each model): local, or dask"
    )

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return validate_name("model_name", value)


def check_source(value: str, allowed: str) -> str:
    """An input source: a local path or ``s3://`` (other URL schemes are refused, naming what is allowed)."""
    if not value.strip() or ("://" in value and not value.startswith("s3://")):
        raise ValueError(f"source {value!r} is not allowed: use {allowed}")
    return value


class ModelTarget(FormModel):
    """What every flow after build names: the model, the local scratch folder, the store."""

    model_name: str = Field("digits-classifier", description="Registry name of the model")
    work_dir: Path = Field(Path(".lepton/work"), description="Local scratch: verified downloads and their cache")
    store: StoreConfig = Field(default_factory=StoreConfig, description="The registry: file://path or s3://bucket/prefix")

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return validate_name("model_name", value)


class RollbackConfig(ModelTarget):
    """Which model to roll back, and to what."""

    to_version: str | None = Field(None, description="Version to serve; empty for the one before the current")
    reason: str = Field("manual rollback", min_length=1, max_length=500, description="Recorded in the alias history")

    @field_validator("to_version")
    @classmethod
    def _to_version(cls, value: str | None) -> str | None:
        return validate_name("to_version", value) if value else None


class ScoreConfig(ModelTarget):
    """Which images to score with production."""

    source: str = Field(".lepton/incoming", description="Folder of images, or s3://bucket/prefix on the store's endpoint")
    batch_size: int = Field(256, ge=1, le=65_536, description="Images per inference call")
    variant_choice: HostChoiceConfig = Field(
        default_factory=HostChoiceConfig,
        description="Which released variant scores here: the in-budget candidates timed on this host, the fastest wins",
    )
    processed: str | None = Field(
        None,
        description="Treat the source folder as an inbox: once logged, move each file to this folder under the "
        "day's date (unusable ones under rejected/), so the next run scores only new files; empty: leave them",
    )
    shard_files: int = Field(20_000, ge=1, le=10_000_000, description="Files per scoring shard (one task each)")
    workers: int = Field(
        0, ge=0, le=256,
        description="Processes scoring a shard's images, each with its own copy of the model: 0 one per usable CPU "
        "from 2,000 files (one on a Dask worker, whose siblings share the shards), 1 the scoring process alone",
    )
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="Where shards run: local, or dask")

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return check_source(value, "a local folder or s3://bucket/prefix")

    @model_validator(mode="after")
    def _inbox(self) -> "ScoreConfig":
        if self.processed and self.source.startswith("s3://"):
            raise ValueError("processed moves files out of a local inbox; with an s3:// source leave it empty")
        return self


class MonitorConfig(ModelTarget):
    """Which production logs to check for drift, and how."""

    window_hours: float | None = Field(24.0, gt=0, le=24 * 366, description="Rows logged in the last N hours; empty: all")
    window_rows: int | None = Field(None, ge=1, description="At most the last N rows of the window")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="The drift tests: false-alarm rate, window sampling, estimates")


class ExplainConfig(ModelTarget):
    """What to explain with production's artifact."""

    source: str = Field(
        "test-split",
        description="test-split (the release's held-out images), latest-batch (last scored), a folder, or s3://bucket/prefix",
    )
    num_images: int = Field(8, ge=1, le=500, description="Images explained: the least confident quarter, then by class")
    lime: LimeConfig = Field(default_factory=LimeConfig, description="LIME's superpixels and samples")
    batch_images: int = Field(4, ge=1, le=500, description="Inputs explained per task (batches run in parallel on dask)")
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="Where LIME batches run: local, or dask")

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return check_source(value, "test-split, latest-batch, a folder or s3://bucket/prefix")


class FeedbackConfig(ModelTarget):
    """True labels that arrived after scoring."""

    source: str | None = Field(
        None, description="CSV/Parquet label table (label + image_sha256 or file), a folder of them, or s3://bucket/prefix"
    )
    labels: list[LabelRow] = Field(default_factory=list, description="Labels given here: input id (sha256 or file) and class")
    window_hours: float | None = Field(
        None, gt=0, le=24 * 366, description="Only predictions logged in the last N hours; empty: all"
    )
    performance: PerformanceConfig = Field(default_factory=PerformanceConfig, description="When realized accuracy counts as degraded")
    keep_for_training: bool = Field(
        True, description="Keep labelled inputs in the store so a build with include_feedback trains on them"
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        return check_source(value, "a label file, a folder of them or s3://bucket/prefix") if value else None


class CleanConfig(FormModel):
    """What ``python -m flows.clean`` frees: the work dir's results, snapshots, runs and step folders no build used lately."""

    work_dir: Path = Field(Path(".lepton/work"), description="The work dir builds keep their steps in")
    unused_days: float = Field(
        14, ge=1, le=3650,
        description="Remove what no build has written or reused for this many days (a build running longer may lose "
        "its snapshot: a snapshot is marked used when a build ingests or reuses it)",
    )
    apply: bool = Field(False, description="Delete them; without it, only list what would go")

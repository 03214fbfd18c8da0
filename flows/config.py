"""The one validated parameter of each flow."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.compress.config import QuantizeConfig
from tasks.data.config import DataConfig
from tasks.export.config import EvaluateConfig
from tasks.registry.config import GateConfig, StoreConfig, validate_name
from tasks.train.config import TrainConfig


class BuildConfig(BaseModel):
    """Everything the build flow needs; the defaults build the embedded digits demo.

    Rendered by the Prefect UI as the build deployment's parameter form.
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field("digits-classifier", description="Registry name: a-z, 0-9, '.', '_', '-'")
    work_dir: Path = Field(Path(".lepton/work"), description="Local scratch: datasets, snapshots, runs, cache")
    reason: str = Field("manual", max_length=500, description="Why this build runs; recorded with the release")
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    gate: GateConfig = Field(default_factory=GateConfig)

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return validate_name("model_name", value)


class RollbackConfig(BaseModel):
    """Which model to roll back, and to what; rendered by the Prefect UI as the rollback form."""

    model_config = ConfigDict(extra="forbid")

    model_name: str = Field("digits-classifier", description="Registry name of the model")
    to_version: str | None = Field(None, description="Version to serve; empty for the one before the current")
    reason: str = Field("manual rollback", min_length=1, max_length=500, description="Recorded in the alias history")
    work_dir: Path = Field(Path(".lepton/work"), description="Local scratch: verified downloads and their cache")
    store: StoreConfig = Field(default_factory=StoreConfig)

    @field_validator("model_name")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return validate_name("model_name", value)

    @field_validator("to_version")
    @classmethod
    def _to_version(cls, value: str | None) -> str | None:
        return validate_name("to_version", value) if value else None

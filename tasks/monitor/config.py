"""Configuration of monitoring: what a release keeps as its reference, and how drift is tested."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReferenceConfig(BaseModel):
    """What a release keeps as its monitoring reference: the rows production windows are compared with."""

    model_config = ConfigDict(extra="forbid")

    embedding_components: int = Field(8, ge=1, le=64, description="PCA components kept of the model's embedding")
    train_sample: int = Field(500, ge=0, le=100_000, description="Train images added to the test split's rows")
    batch_size: int = Field(256, ge=1, le=65_536, description="Images per inference call")
    seed: int = 0


class DriftConfig(BaseModel):
    """How drift is measured and when it counts."""

    model_config = ConfigDict(extra="forbid")

    drift_share: float = Field(0.3, gt=0.0, le=1.0, description="Share of drifted columns that means drift")
    prediction_drift_counts: bool = Field(True, description="Drift of the predicted class alone also means drift")
    num_method: str = Field("ks", description="Evidently stat test for numerical columns (ks, wasserstein, psi, ...)")
    cat_method: str = Field("chisquare", description="Evidently stat test for the predicted class (chisquare, jensenshannon, ...)")
    threshold: float | None = Field(
        None, gt=0.0, description="Threshold of the numerical tests; None keeps Evidently's (0.05 p-value, 0.1 distance)"
    )
    # The predicted class alone can raise the event, so its test is stricter: at p < 0.05 one
    # clean hourly window in twenty would start a retrain.
    cat_threshold: float | None = Field(0.001, gt=0.0, description="Threshold of the predicted-class test")
    sample_rows: int = Field(5000, ge=100, le=1_000_000, description="Current rows tested (seeded sample of the window)")
    min_rows: int = Field(100, ge=10, description="Fewer rows than this in the window: 'not enough data', no verdict")
    seed: int = 0

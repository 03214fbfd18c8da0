"""The monitoring reference stored in each release: features of its test split and a train sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.backends import Backend
from tasks.monitor.features import Projection, feature_columns, fit_projection, monitoring_features

REFERENCE_FILE = "monitoring/reference.parquet"
PROJECTION_FILE = "monitoring/projection.json"


class ReferenceConfig(BaseModel):
    """What the release keeps for monitoring."""

    model_config = ConfigDict(extra="forbid")

    embedding_components: int = Field(8, ge=1, le=64, description="PCA components kept of the model's embedding")
    train_sample: int = Field(500, ge=0, le=100_000, description="Train images added to the test split's rows")
    batch_size: int = Field(256, ge=1, le=65_536, description="Images per inference call")
    seed: int = 0


class MonitoringReference(BaseModel):
    """The reference files a release carries, and what the monitor needs to read them."""

    reference_path: Path
    projection_path: Path
    rows: int
    embedding_components: int
    variant: str

    def release_files(self) -> dict[str, Path]:
        return {REFERENCE_FILE: self.reference_path, PROJECTION_FILE: self.projection_path}

    def manifest_entry(self) -> dict:
        numerical, categorical = feature_columns(self.embedding_components)
        return {
            "reference": REFERENCE_FILE,
            "projection": PROJECTION_FILE,
            "rows": self.rows,
            "variant": self.variant,
            "numerical_columns": numerical,
            "categorical_columns": categorical,
        }


def infer(backend: Backend, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and embeddings of uint8 N x C x H x W images, scaled as the model was trained (pixel / 255)."""
    from tasks.train.datamodule import to_model_input

    if len(images) == 0:
        raise ValueError("no images to run the model on")
    outputs = [backend.embed(to_model_input(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])


def build_reference(
    backend: Backend, snapshot: DatasetSnapshot, config: ReferenceConfig, out_dir: Path
) -> tuple[Path, Path, int]:
    """Write the reference features (Parquet) and the embedding projection (JSON) under ``out_dir``.

    The projection is fitted on the train sample's embeddings (the test split
    alone when the sample is empty) from the served artifact itself.

    Returns:
        The reference path, the projection path and the number of reference rows.
    """
    test_images, _ = snapshot.arrays("test")
    parts = [("test", test_images, snapshot.original_sizes("test"), snapshot.file_hashes("test"))]
    train_images, _ = snapshot.arrays("train")
    if config.train_sample and len(train_images):
        rng = np.random.default_rng(config.seed)
        pick = np.sort(rng.choice(len(train_images), size=min(config.train_sample, len(train_images)), replace=False))
        hashes = snapshot.file_hashes("train")
        parts.append(("train", train_images[pick], snapshot.original_sizes("train")[pick], [hashes[i] for i in pick]))
    outputs = {name: infer(backend, images, config.batch_size) for name, images, _, _ in parts}
    fit_on = outputs["train"][1] if "train" in outputs else outputs["test"][1]
    projection = fit_projection(fit_on, config.embedding_components, config.seed)
    frames = []
    for name, images, sizes, hashes in parts:
        logits, embeddings = outputs[name]
        frame = monitoring_features(images, sizes, logits, embeddings, projection, snapshot.classes)
        frame.insert(0, "split", name)
        frame.insert(1, "image_sha256", hashes)
        frames.append(frame)
    reference = pd.concat(frames, ignore_index=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    reference_path = out_dir / Path(REFERENCE_FILE).name
    projection_path = out_dir / Path(PROJECTION_FILE).name
    reference.to_parquet(reference_path, index=False)
    projection_path.write_text(projection.model_dump_json(indent=1))
    return reference_path, projection_path, len(reference)


def load_projection(path: Path) -> Projection:
    """The projection a release stored."""
    return Projection.model_validate_json(path.read_text())

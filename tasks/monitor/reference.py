"""The monitoring reference each release carries: the monitoring rows of its test split and a train sample.

The rows are computed exactly as scoring computes production's (``tasks.score``), by the served
artifact itself, so a window of production rows compares like with like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.backends import Backend
from tasks.monitor.config import ReferenceConfig
from tasks.registry.manifest import MonitoringReference, MonitoringSection
from tasks.score.features import fit_projection, monitoring_columns, monitoring_features
from tasks.score.inference import infer

REFERENCE_FILE = "monitoring/reference.parquet"
PROJECTION_FILE = "monitoring/projection.json"


def build_reference(
    backend: Backend, variant: str, snapshot: DatasetSnapshot, config: ReferenceConfig, out_dir: Path
) -> MonitoringReference:
    """Write the reference rows (Parquet) and the embedding projection (JSON) under ``out_dir``.

    The projection is fitted on the train sample's embeddings (the test split
    alone when the sample is empty) from the served artifact ``backend`` (named ``variant``).
    """
    contract = snapshot.input
    rows = {"test": _split_rows(snapshot, "test", None)}
    train_count = sum(snapshot.counts["train"].values())
    if config.train_sample and train_count:
        rng = np.random.default_rng(config.seed)
        pick = np.sort(rng.choice(train_count, size=min(config.train_sample, train_count), replace=False))
        rows["train"] = _split_rows(snapshot, "train", pick)
    outputs = {name: infer(backend, contract, raw, config.batch_size) for name, (raw, _, _) in rows.items()}
    fit_on = outputs["train"][1] if "train" in outputs else outputs["test"][1]
    projection = fit_projection(fit_on, config.embedding_components, config.seed)
    frames = []
    for name, (raw, meta, hashes) in rows.items():
        logits, embeddings = outputs[name]
        frame = monitoring_features(contract.statistics(raw, meta), logits, embeddings, projection, snapshot.classes)
        frame.insert(0, "split", name)
        frame.insert(1, "image_sha256", hashes)
        frames.append(frame)
    reference = pd.concat(frames, ignore_index=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    reference_path = out_dir / Path(REFERENCE_FILE).name
    projection_path = out_dir / Path(PROJECTION_FILE).name
    reference.to_parquet(reference_path, index=False)
    projection_path.write_text(projection.model_dump_json(indent=1))
    numerical, categorical = monitoring_columns(contract.statistic_columns, projection.n_components)
    section = MonitoringSection(
        reference=REFERENCE_FILE,
        projection=PROJECTION_FILE,
        rows=len(reference),
        variant=variant,
        numerical_columns=numerical,
        categorical_columns=categorical,
    )
    return MonitoringReference(section=section, files={REFERENCE_FILE: reference_path, PROJECTION_FILE: projection_path})


def _split_rows(snapshot: DatasetSnapshot, split: str, pick: np.ndarray | None) -> tuple[np.ndarray, pd.DataFrame, list[str]]:
    """Raw inputs, metadata and file hashes of one split (only the ``pick`` rows, when given)."""
    raw, _ = snapshot.arrays(split)
    meta, hashes = snapshot.metadata(split), snapshot.file_hashes(split)
    if pick is None:
        return raw, meta, hashes
    return raw[pick], meta.iloc[pick].reset_index(drop=True), [hashes[i] for i in pick]


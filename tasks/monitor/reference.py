"""The monitoring reference each release carries: the monitoring rows of the data the model never trained on.

The rows are computed exactly as scoring computes production's (``tasks.score``), by the released
artifact itself, so a window of production rows compares like with like. A host may serve another
in-budget variant than the build chose (it times them on its own CPU): each such alternative has
its own reference, under ``monitoring/{variant}/``, since its embeddings and confidences are its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.data.contract import InputContract
from tasks.data.snapshot import DatasetSnapshot
from tasks.export.backends import Backend
from tasks.monitor.config import ReferenceConfig
from tasks.monitor.estimate import fit_accuracy_calibration
from tasks.registry.manifest import MonitoringReference, MonitoringSection
from tasks.score.features import fit_projection, monitoring_columns, monitoring_features
from tasks.score.inference import infer

MONITORING_FOLDER = "monitoring"
REFERENCE_NAME = "reference.parquet"
PROJECTION_NAME = "projection.json"


REFERENCE_SPLITS = ["val", "test"]
# Train rows the embedding projection is fitted on, at most: a PCA of 8 components needs no more.
PROJECTION_SAMPLE = 5000


def build_reference(
    backend: Backend,
    variant: str,
    snapshot: DatasetSnapshot,
    config: ReferenceConfig,
    out_dir: Path,
    folder: str = MONITORING_FOLDER,
) -> MonitoringReference:
    """Write the reference rows (Parquet) and the embedding projection (JSON) under ``out_dir``.

    The rows are the validation and test splits, computed by the released artifact ``backend``
    (named ``variant``), with each row's true ``label``. The projection is fitted on the train
    split's embeddings; the label-free accuracy estimate is calibrated on the reference rows.
    ``folder`` is where the files go in the release.
    """
    contract = snapshot.input
    rows = {split: _split_rows(snapshot, split) for split in REFERENCE_SPLITS if sum(snapshot.counts[split].values())}
    if not rows:
        raise ValueError("the snapshot has no validation or test rows to keep as the monitoring reference")
    outputs = {name: infer(backend, contract, raw, config.batch_size) for name, (raw, _, _, _) in rows.items()}
    train_raw, _ = snapshot.arrays("train")
    if len(train_raw) > PROJECTION_SAMPLE:
        pick = np.random.default_rng(config.seed).choice(len(train_raw), size=PROJECTION_SAMPLE, replace=False)
        train_raw = train_raw[np.sort(pick)]
    fit_on = infer(backend, contract, train_raw, config.batch_size)[1] if len(train_raw) else outputs[next(iter(outputs))][1]
    projection = fit_projection(fit_on, config.embedding_components, config.seed)
    frames = []
    for name, (raw, meta, hashes, labels) in rows.items():
        logits, embeddings = outputs[name]
        frame = monitoring_features(_statistics(contract, raw, meta, config.batch_size), logits, embeddings, projection, snapshot.classes)
        frame.insert(0, "split", name)
        frame.insert(1, "image_sha256", hashes)
        frame["label"] = [snapshot.classes[i] for i in labels]
        frames.append(frame)
    reference = pd.concat(frames, ignore_index=True)
    calibration = fit_accuracy_calibration(
        reference["confidence"].to_numpy(), (reference["predicted_class"] == reference["label"]).to_numpy(), seed=config.seed
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    reference_path, projection_path = out_dir / REFERENCE_NAME, out_dir / PROJECTION_NAME
    reference_file, projection_file = f"{folder}/{REFERENCE_NAME}", f"{folder}/{PROJECTION_NAME}"
    reference.to_parquet(reference_path, index=False)
    projection_path.write_text(projection.model_dump_json(indent=1))
    numerical, categorical = monitoring_columns(contract, projection.n_components)
    section = MonitoringSection(
        reference=reference_file,
        projection=projection_file,
        rows=len(reference),
        variant=variant,
        numerical_columns=numerical,
        categorical_columns=categorical,
        reference_splits=list(rows),
        calibration=calibration,
    )
    return MonitoringReference(section=section, files={reference_file: reference_path, projection_file: projection_path})


def _statistics(contract: InputContract, raw: np.ndarray, meta: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    """The contract's statistics of every input, a batch at a time (``raw`` stays on disk)."""
    parts = [
        contract.statistics(np.asarray(raw[i : i + batch_size]), meta.iloc[i : i + batch_size].reset_index(drop=True))
        for i in range(0, len(raw), batch_size)
    ]
    return pd.concat(parts, ignore_index=True) if parts else contract.statistics(np.asarray(raw), meta)


def _split_rows(snapshot: DatasetSnapshot, split: str) -> tuple[np.ndarray, pd.DataFrame, list[str], np.ndarray]:
    """Raw inputs, metadata, file hashes and label indices of one split."""
    raw, labels = snapshot.arrays(split)
    return raw, snapshot.metadata(split), snapshot.file_hashes(split), labels

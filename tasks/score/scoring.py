"""Score files with a released artifact: predictions, and the monitoring row of each scored input.

Files are decoded by the release's input contract (as in training) and their rows computed by the
same function as the release's reference, so build and serve cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel

from tasks.data.contract import InputContract
from tasks.export.backends import Backend
from tasks.score.features import Projection, monitoring_columns, monitoring_features, non_finite_rows
from tasks.score.inference import infer, probabilities, softmax
from tasks.score.inputs import FailedInput, InputFile


@dataclass(frozen=True)
class ScoredFiles:
    """Predictions (one row per scored input), monitoring rows (None without a projection), failures."""

    predictions: pd.DataFrame
    features: pd.DataFrame | None
    failures: list[FailedInput]


class ScoreResult(BaseModel):
    """What a scoring run did."""

    model: str
    version: str
    variant: str | None = None
    variant_reason: str = ""
    batch_id: str
    files: int
    scored: int
    failed: list[FailedInput]
    unseen_sizes: int = 0
    class_counts: dict[str, int]
    predictions_uri: str | None = None
    monitoring_uri: str | None = None
    note: str = ""


def score_files(
    files: list[InputFile],
    backend: Backend,
    contract: InputContract,
    classes: list[str],
    projection: Projection | None,
    batch_size: int = 256,
) -> ScoredFiles:
    """Decode, predict and describe every file; an unusable file is a failure of that file only.

    A file that cannot be decoded, or whose monitoring row comes out NaN/infinite, is
    reported with its reason; the rest of the batch is scored.
    """
    decoded = contract.read([f.path for f in files])
    failures = [FailedInput(name=files[index].name, reason=reason) for index, reason in decoded.failures]
    if not decoded.source:
        return ScoredFiles(pd.DataFrame(), None, failures)
    kept = [files[index] for index in decoded.source]
    if projection is None:
        # No monitoring reference: predictions only, from the logits output alone (variants released
        # before monitoring existed have no embedding output).
        return ScoredFiles(_predictions(kept, probabilities(backend, contract, decoded.raw, batch_size), classes), None, failures)
    logits, embeddings = infer(backend, contract, decoded.raw, batch_size)
    predictions = _predictions(kept, softmax(logits), classes)
    features = monitoring_features(contract.statistics(decoded.raw, decoded.meta), logits, embeddings, projection, classes)
    features.insert(0, "file", predictions["file"])
    features.insert(1, "image_sha256", predictions["image_sha256"])
    bad = non_finite_rows(features, monitoring_columns(contract.statistic_columns, projection.n_components)[0])
    # A model or input that yields NaN/inf cannot be tested for drift: report it, keep the rest.
    failures += [FailedInput(name=name, reason="monitoring features are NaN or infinite") for name in features.loc[bad, "file"]]
    return ScoredFiles(predictions.loc[~bad].reset_index(drop=True), features.loc[~bad].reset_index(drop=True), failures)


def _predictions(kept: list[InputFile], probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """One row per scored file: where it is, its content hash, the predicted class and its probability."""
    return pd.DataFrame(
        {
            "file": [f.name for f in kept],
            "path": [str(f.path.resolve()) for f in kept],
            "image_sha256": [f.sha256 for f in kept],
            "predicted_class": [classes[i] for i in probs.argmax(axis=1)],
            "confidence": probs.max(axis=1),
        }
    )

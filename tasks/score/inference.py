"""Inference with a back end on raw inputs: the input contract prepares each batch, the variant runs it."""

from __future__ import annotations

import numpy as np

from tasks.data.contract import InputContract
from tasks.export.backends import Backend


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from N x classes logits (float64, numerically stable)."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def infer(backend: Backend, contract: InputContract, raw: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits and embeddings of raw inputs (as the contract decodes them), ``batch_size`` at a time.

    Raises:
        ValueError: no inputs.
        NoEmbeddingOutput: the variant predates the embedding output.
    """
    if len(raw) == 0:
        raise ValueError("no inputs to run the model on")
    outputs = [backend.embed(contract.to_model_input(raw[i : i + batch_size])) for i in range(0, len(raw), batch_size)]
    return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])


def probabilities(backend: Backend, contract: InputContract, raw: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class probabilities of raw inputs, ``batch_size`` at a time (the logits output only)."""
    return np.concatenate(
        [softmax(backend.predict(contract.to_model_input(raw[i : i + batch_size]))) for i in range(0, len(raw), batch_size)]
    )

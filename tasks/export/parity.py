"""Export parity: an exported variant must give the logits its source model gives."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from tasks.errors import LeptonError
from tasks.export.backends import Backend, predict_batched


class ParityResult(BaseModel):
    """How far a variant's logits are from the reference on the same images."""

    variant: str
    max_abs_diff: float
    tolerance: float
    top1_agreement: float
    passed: bool


class ParityError(LeptonError):
    """An exported variant disagrees with its source model beyond the tolerance."""


def compare_logits(variant: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float) -> ParityResult:
    """Max abs logit difference and top-1 agreement between two runs on the same batch.

    Raises:
        ValueError: the two arrays do not have the same shape.
    """
    if reference.shape != candidate.shape:
        raise ValueError(f"{variant}: logits shape {candidate.shape} differs from reference {reference.shape}")
    diff = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64))))
    agreement = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    return ParityResult(
        variant=variant,
        max_abs_diff=diff,
        tolerance=tolerance,
        top1_agreement=agreement,
        passed=bool(np.isfinite(diff) and diff <= tolerance),
    )


def _expected(reference: Backend | np.ndarray, images: np.ndarray) -> np.ndarray:
    """The reference's logits on ``images``: run now, or given (computed once for several checks)."""
    return reference if isinstance(reference, np.ndarray) else predict_batched(reference, images)


def check_parity(
    variant: str, reference: Backend | np.ndarray, candidate: Backend, images: np.ndarray, tolerance: float
) -> ParityResult:
    """Run the candidate (and the reference, unless its logits are given) on ``images`` and compare.

    Raises:
        ParityError: max abs logit difference above ``tolerance``.
    """
    result = compare_logits(variant, _expected(reference, images), predict_batched(candidate, images), tolerance)
    if not result.passed:
        raise ParityError(
            f"{variant} differs from the PyTorch model by {result.max_abs_diff:.3g} in logits on "
            f"{len(images)} test examples (tolerance {tolerance:g}; top-1 agreement {result.top1_agreement:.1%})"
        )
    return result


# bf16 keeps 8 bits of mantissa: logits move by about 1 % of their scale. A bf16 variant stays within 2 % of
# the reference's largest |logit| and keeps at least 99 % of its top-1 decisions; its accuracy is then
# measured and budgeted like any variant's.
BF16_RELATIVE_TOLERANCE = 0.02
BF16_MIN_TOP1_AGREEMENT = 0.99


def check_bf16_parity(variant: str, reference: Backend | np.ndarray, candidate: Backend, images: np.ndarray) -> ParityResult:
    """Compare a bf16 variant with its source at the bf16 tolerance; ``passed`` says whether it may be offered."""
    expected = _expected(reference, images)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    result = compare_logits(variant, expected, predict_batched(candidate, images), BF16_RELATIVE_TOLERANCE * scale)
    return result.model_copy(update={"passed": result.passed and result.top1_agreement >= BF16_MIN_TOP1_AGREEMENT})

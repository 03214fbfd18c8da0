"""The release gate: may a candidate replace production? Production is scored on the candidate's test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks.data.contract import InputContract
from tasks.export.measure import accuracy
from tasks.registry.config import GateConfig
from tasks.registry.release import read_manifest
from tasks.registry.serving import fetch_release, production_version
from tasks.registry.store import ArtifactStore


class ProductionScore(BaseModel):
    """Production's accuracy on the candidate's test split, or why it could not be measured."""

    version: str | None = None
    accuracy: float | None = None
    comparable: bool = True
    note: str = ""


def score_production(
    store: ArtifactStore,
    model: str,
    contract: InputContract,
    inputs: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    work_dir: Path,
) -> ProductionScore:
    """Production's served variant (downloaded, sha256-verified) measured on the candidate's test split.

    ``inputs`` are prepared by the candidate's input contract. Production is
    incomparable when it was trained on other classes or takes other inputs;
    the gate then decides by its own setting.
    """
    version = production_version(store, model)
    if version is None:
        return ProductionScore(note="no production release yet")
    manifest = read_manifest(store, model, version)
    if manifest.classes != classes:
        return ProductionScore(
            version=version,
            comparable=False,
            note=f"production classes {manifest.classes} differ from the candidate's {classes}",
        )
    if manifest.input != contract:
        return ProductionScore(
            version=version,
            comparable=False,
            note=(
                f"production takes inputs {list(manifest.input.shape)} ({manifest.input.describe()}), the candidate's "
                f"test split is {list(contract.shape)} ({contract.describe()})"
            ),
        )
    # Compared first, then only the served variant is downloaded (verified): the gate needs nothing else.
    production = fetch_release(store, model, version, work_dir, monitoring=False, manifest=manifest)
    return ProductionScore(version=production.version, accuracy=accuracy(production.open(), inputs, labels))


class GateDecision(BaseModel):
    """The verdict and a sentence saying why."""

    promote: bool
    reason: str
    candidate_accuracy: float
    production_accuracy: float | None = None
    production_version: str | None = None


def decide(
    candidate_accuracy: float,
    production_accuracy: float | None,
    tolerance_pp: float,
    production_version: str | None = None,
) -> GateDecision:
    """Promote when there is no production yet, or the candidate is not worse beyond the tolerance.

    Both accuracies must come from the same test split; ``production_accuracy``
    is None only when nothing is in production.
    """
    if production_accuracy is None:
        return GateDecision(
            promote=True, reason="no production release yet", candidate_accuracy=candidate_accuracy
        )
    drop_pp = (production_accuracy - candidate_accuracy) * 100.0
    promote = drop_pp <= tolerance_pp + 1e-9
    verdict = "within" if promote else "beyond"
    reason = (
        f"candidate {candidate_accuracy:.4f} vs production {production_version} {production_accuracy:.4f} "
        f"on the same test split: drop {max(drop_pp, 0.0):.2f} pp, {verdict} the {tolerance_pp} pp tolerance"
    )
    return GateDecision(
        promote=promote,
        reason=reason,
        candidate_accuracy=candidate_accuracy,
        production_accuracy=production_accuracy,
        production_version=production_version,
    )


def gate_candidate(
    candidate_accuracy: float, candidate_version: str, production: ProductionScore, config: GateConfig
) -> GateDecision:
    """The gate for a published candidate, given production's score on the candidate's test split.

    A candidate that already is production is not moved again; an incomparable
    production (other classes or input shape) is replaced only when
    ``config.promote_if_incomparable`` says so.
    """
    if production.version == candidate_version:
        return GateDecision(
            promote=False, reason=f"{candidate_version} is already production", candidate_accuracy=candidate_accuracy
        )
    if not production.comparable:
        return GateDecision(
            promote=config.promote_if_incomparable,
            reason=f"{production.note}; promote_if_incomparable={config.promote_if_incomparable}",
            candidate_accuracy=candidate_accuracy,
            production_version=production.version,
        )
    return decide(candidate_accuracy, production.accuracy, config.tolerance_pp, production.version)

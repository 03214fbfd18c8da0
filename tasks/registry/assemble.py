"""What a build releases: its files by release path, and its manifest, from the build's typed results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.data.snapshot import DatasetSnapshot
from tasks.export.evaluate import Evaluation
from tasks.registry.lineage import code_version
from tasks.registry.manifest import (
    DatasetLineage,
    LatencyRecord,
    Metrics,
    MonitoringReference,
    PolicyRecord,
    ReleaseDraft,
    ReleasedVariant,
    ServedVariant,
    TrainingLineage,
)
from tasks.train.trained import TrainedModel

MODEL_CARD = "MODEL_CARD.md"


def release_files(
    snapshot: DatasetSnapshot, trained: TrainedModel, evaluation: Evaluation, monitoring: MonitoringReference | None
) -> dict[str, Path]:
    """Release-relative path -> local file: every variant, the dataset lineage, the training history, the monitoring reference."""
    files: dict[str, Path] = dict(monitoring.files) if monitoring else {}
    for variant in evaluation.variants:
        for path in variant.files():
            files[f"{variant.name}/{path.relative_to(variant.directory).as_posix()}"] = path
    files["dataset/validation_report.json"] = snapshot.report_path
    files["dataset/manifest.json"] = snapshot.directory / "manifest.json"
    files["training/history.json"] = trained.state_dict_path.parent / "history.json"
    return files


def draft_manifest(
    model: str,
    snapshot: DatasetSnapshot,
    trained: TrainedModel,
    evaluation: Evaluation,
    config: dict[str, Any],
    monitoring: MonitoringReference | None,
) -> ReleaseDraft:
    """Everything the release says about itself: input contract, variants and the choice, metrics, lineage."""
    served = evaluation.served_variant()
    choice = evaluation.choice
    return ReleaseDraft(
        model=model,
        input=snapshot.input,
        classes=snapshot.classes,
        served=ServedVariant(
            name=served.name,
            runtime=served.runtime,
            precision=served.precision,
            stage=served.stage,
            entrypoint=served.entrypoint,
            reason=choice.reason,
        ),
        policy=PolicyRecord(**choice.model_dump(exclude={"reason", "served"})),
        latency=LatencyRecord(**evaluation.latency.model_dump(), host=evaluation.host),
        metrics=Metrics(
            test_accuracy_fp32=evaluation.baseline_accuracy,
            test_accuracy_served=served.accuracy,
            val_accuracy=trained.val_acc,
            test_images=sum(snapshot.counts["test"].values()),
        ),
        variants=[
            ReleasedVariant(**v.model_dump(exclude={"directory"}), in_budget=choice.in_budget(v.accuracy))
            for v in evaluation.variants
        ],
        parity=evaluation.parity,
        dataset=DatasetLineage(
            version=snapshot.version, source=snapshot.source, counts=snapshot.counts, quarantined=len(snapshot.quarantined)
        ),
        training=TrainingLineage(model=trained.model_name, best_epoch=trained.best_epoch, epochs_run=len(trained.history)),
        monitoring=monitoring.section if monitoring else None,
        alternatives=monitoring.alternatives if monitoring else [],
        references=evaluation.references,
        config=config,
        code_version=code_version(),
        model_card=MODEL_CARD,
    )

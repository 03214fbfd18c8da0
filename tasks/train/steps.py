"""Prefect tasks of the training stage."""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.runtime import flow_run

from tasks.data.snapshot import DatasetSnapshot
from tasks.train.config import TrainConfig
from tasks.train.fit import fit_classifier
from tasks.train.models import resolve_model
from tasks.train.trained import EpochRecord, TrainedModel


@task
def train(snapshot: DatasetSnapshot, config: TrainConfig, work_dir: Path) -> TrainedModel:
    """Fit the configured model on the snapshot; publish the per-epoch loss/accuracy table.

    Progress shows in the run's artifacts epoch by epoch (early stopping may end it before the last).
    """
    logger = get_run_logger()
    name = resolve_model(config.model, snapshot.input)
    progress = create_progress_artifact(0.0, description=f"training {name}: up to {config.max_epochs} epochs")

    def report(record: EpochRecord) -> None:
        logger.info(
            "epoch %d: train_loss %.4f train_acc %.4f val_loss %.4f val_acc %.4f",
            record.epoch,
            record.train_loss,
            record.train_acc,
            record.val_loss,
            record.val_acc,
        )
        update_progress_artifact(
            progress, 100.0 * (record.epoch + 1) / config.max_epochs,
            description=f"training {name}: epoch {record.epoch + 1} of at most {config.max_epochs}, "
            f"val_acc {record.val_acc:.4f}",
        )

    # One folder per run: concurrent or repeated builds never share checkpoints or variant files.
    run_id = str(flow_run.id or uuid.uuid4())[:8]
    out_dir = work_dir / "runs" / snapshot.version / f"{name}-seed{config.seed}-{run_id}"
    trained = fit_classifier(snapshot, config, out_dir, on_epoch=report)
    create_table_artifact(
        key="training-epochs",
        table=[{k: round(v, 4) if isinstance(v, float) else v for k, v in r.model_dump().items()} for r in trained.history],
        description=f"{name}: best epoch {trained.best_epoch}, test accuracy {trained.test_acc:.4f}",
    )
    update_progress_artifact(
        progress, 100.0, description=f"trained {name}: {len(trained.history)} epochs, best epoch "
        f"{trained.best_epoch}, test accuracy {trained.test_acc:.4f}",
    )
    logger.info("best epoch %d, test accuracy %.4f", trained.best_epoch, trained.test_acc)
    return trained

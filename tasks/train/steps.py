"""Prefect tasks of the training stage."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.context import TaskRunContext
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE

from tasks.caching import code_version, step_key
from tasks.data.snapshot import DatasetSnapshot
from tasks.host import BF16_FLAGS, cpu_model_and_flags
from tasks.train.config import TrainConfig
from tasks.train.fit import fit_classifier
from tasks.train.models import resolve_model
from tasks.train.runs import resume_point, run_folder, training_in
from tasks.train.trained import EpochRecord, TrainedModel


def _refreshing() -> bool:
    """Whether this run was asked to recompute instead of reusing kept results (``PREFECT_TASKS_REFRESH_CACHE``)."""
    context = TaskRunContext.get()
    asked = context.task.refresh_cache if context else None
    return bool(PREFECT_TASKS_REFRESH_CACHE.value() if asked is None else asked)


@task(cache_key_fn=step_key(files=("config.weights_path",)))
def train(snapshot: DatasetSnapshot, config: TrainConfig, work_dir: Path) -> TrainedModel:
    """Fit the configured model on the snapshot; publish the per-epoch loss/accuracy table.

    Progress shows in the run's artifacts epoch by epoch (early stopping may end it before the last).
    The run trains in a folder named by its inputs and code (``tasks.train.runs``): a build killed
    while training continues, when started again, from the last epoch it finished.

    Raises:
        RunFolderBusy: another process is training the same run right now.
    """
    logger = get_run_logger()
    name = resolve_model(config.model, snapshot.input)
    progress = create_progress_artifact(0.0, description=f"training {name}: up to {config.max_epochs} epochs")
    if config.precision == "bf16-mixed" and config.accelerator == "cpu" and not set(BF16_FLAGS) & cpu_model_and_flags()[1]:
        logger.warning("train.precision bf16-mixed: this CPU has no native bfloat16 (AVX-512 BF16 or AMX); it is emulated, slower than 32-true")
    if config.augment.active and snapshot.input.kind != "image":
        logger.warning("train.augment changes images only: the rows of a table are trained on as they are")

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

    # One folder per run of these inputs and this code: a build started again finds what the killed one left.
    out_dir = run_folder(work_dir, snapshot.version, name, config, code_version(fit_classifier.__module__))
    with training_in(out_dir):
        if config.resume_from:  # the checkpoint asked for, as given
            resume, why = None, f"training on from {config.resume_from} in {out_dir}"
        else:
            resume, why = resume_point(out_dir, fresh=_refreshing())
        logger.info("%s", why)
        trained = fit_classifier(snapshot, config, out_dir, on_epoch=report, resume=resume)
    update_progress_artifact(
        progress, 100.0, description=f"trained {name}: {len(trained.history)} epochs, best epoch "
        f"{trained.best_epoch}, test accuracy {trained.test_acc:.4f}",
    )
    return trained


@task
def report_training(trained: TrainedModel) -> None:
    """The epoch table artifact and the result, in every run: also when ``train`` was reused from an earlier one."""
    create_table_artifact(
        key="training-epochs",
        table=[{k: round(v, 4) if isinstance(v, float) else v for k, v in r.model_dump().items()} for r in trained.history],
        description=f"{trained.model_name}: best epoch {trained.best_epoch}, test accuracy {trained.test_acc:.4f}",
    )
    get_run_logger().info("%s: best epoch %d, test accuracy %.4f", trained.model_name, trained.best_epoch, trained.test_acc)

"""Where a training run lives, so a run killed part way is found and continued by the next one.

A run's folder is ``work_dir/runs/{dataset version}/{model}-seed{seed}-{key}``, the key a hash of
the dataset version, the training config (without ``resume_from``), the file behind
``weights_path`` and the training code: the same build started again trains into the same folder
and continues from its ``checkpoints/last.ckpt``. One process at a time trains in a folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from tasks.errors import LeptonError
from tasks.hashing import sha256_file
from tasks.train.config import TrainConfig

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
FINISHED = "model_state.pt"  # written by a fit after its last epoch and test (see fit.trained_model)
LOCK = "train.lock"


class RunFolderBusy(LeptonError):
    """Another live process is training into the same run folder."""


def run_key(dataset_version: str, config: TrainConfig, code: str) -> str:
    """Hash of what a run's weights depend on: the data, the training config, initial weights, the code."""
    settings = config.model_dump(mode="json", exclude={"resume_from"})
    weights = sha256_file(config.weights_path) if config.weights_path and config.weights_path.is_file() else None
    blob = json.dumps({"dataset": dataset_version, "train": settings, "weights": weights, "code": code}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def run_folder(work_dir: Path, dataset_version: str, model: str, config: TrainConfig, code: str) -> Path:
    """The one folder of the run these inputs describe, the same in every process."""
    key = run_key(dataset_version, config, code)[:12]
    return work_dir / "runs" / dataset_version / f"{model}-seed{config.seed}-{key}"


@contextmanager
def training_in(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir`` for this process while it trains (an advisory lock the system drops if the process dies).

    Raises:
        RunFolderBusy: another process holds it; the message names its pid.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunFolderBusy(
                f"another build (pid {holder}) is training into {out_dir} right now: let it finish (this build "
                "then reuses its result), or give this build another work_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # drops the lock


def resume_point(out_dir: Path, fresh: bool) -> tuple[Path | None, str]:
    """The checkpoint to continue from in ``out_dir``, or None to start over; and why, in words.

    A run killed part way left ``checkpoints/last.ckpt`` (written after each epoch): it continues
    from there. A finished run's folder is reached only when its kept result was not reused
    (deleted, outdated, or ``fresh`` asked for): it starts over, as does an unreadable checkpoint.
    """
    last = out_dir / LAST_CHECKPOINT
    if fresh or (out_dir / FINISHED).exists():
        why = "recomputing as asked" if fresh else "the finished run there was not reused"
        _start_over(out_dir)
        return None, f"training from the first epoch in {out_dir} ({why})"
    if not last.is_file():
        return None, f"training from the first epoch in {out_dir}"
    try:
        epoch = int(torch.load(last, map_location="cpu", weights_only=True)["epoch"])
    except Exception as exc:  # noqa: BLE001 - a half-written or foreign checkpoint: start over
        _start_over(out_dir)
        return None, f"training from the first epoch in {out_dir} ({last} is unreadable: {type(exc).__name__})"
    return last, f"resuming the interrupted run in {out_dir} from {last.name}: epoch {epoch} was done, continuing at {epoch + 1}"


def _start_over(out_dir: Path) -> None:
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    for name in (FINISHED, "history.json"):
        (out_dir / name).unlink(missing_ok=True)

"""A fit interrupted after an epoch and resumed from its folder ends exactly as the uninterrupted one; run folders."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.data.config import DataConfig
from tasks.data.imagefolder import ingest_imagefolder
from tasks.train import fit
from tasks.train.config import TrainConfig
from tasks.train.runs import FINISHED, LAST_CHECKPOINT, RunFolderBusy, resume_point, run_folder, training_in
from tests.conftest import write_class_images

CONFIG = TrainConfig(max_epochs=5, batch_size=16, early_stopping_patience=10)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory):
    root = write_class_images(tmp_path_factory.mktemp("imgs"), {"a": 30, "b": 30, "c": 30}, seed=4)
    return ingest_imagefolder(root, DataConfig(image_size=8), tmp_path_factory.mktemp("snaps"))


class Killed(RuntimeError):
    pass


def test_a_fit_killed_after_an_epoch_resumes_to_the_same_weights(snapshot, tmp_path: Path, monkeypatch) -> None:
    whole = fit.fit_classifier(snapshot, CONFIG, tmp_path / "whole")

    record = fit._History.on_train_epoch_end

    def dies_in_epoch_3(self, trainer, pl_module) -> None:
        record(self, trainer, pl_module)
        if trainer.current_epoch == 3:  # after its metrics, before its checkpoint: the epoch is lost
            raise Killed

    monkeypatch.setattr(fit._History, "on_train_epoch_end", dies_in_epoch_3)
    with pytest.raises(Killed):
        fit.fit_classifier(snapshot, CONFIG, tmp_path / "killed")
    monkeypatch.undo()

    checkpoint, why = resume_point(tmp_path / "killed", fresh=False)
    assert checkpoint == tmp_path / "killed" / LAST_CHECKPOINT and "epoch 2 was done, continuing at 3" in why
    resumed = fit.fit_classifier(snapshot, CONFIG, tmp_path / "killed", resume=checkpoint)
    # Random states, shuffling and the epoch table come back with the checkpoint: nothing tells the runs apart.
    assert resumed.history == whole.history and [r.epoch for r in resumed.history] == [0, 1, 2, 3, 4]
    a = torch.load(whole.state_dict_path, weights_only=True)
    b = torch.load(resumed.state_dict_path, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (resumed.best_epoch, resumed.test_acc) == (whole.best_epoch, whole.test_acc)

    # The folder now holds a finished run: reached again (its kept result lost), it starts over.
    checkpoint, why = resume_point(tmp_path / "killed", fresh=False)
    assert checkpoint is None and "not reused" in why
    assert not (tmp_path / "killed" / LAST_CHECKPOINT).exists() and not (tmp_path / "killed" / FINISHED).exists()


def test_an_unreadable_last_checkpoint_or_a_fresh_start_trains_from_the_first_epoch(tmp_path: Path) -> None:
    (tmp_path / LAST_CHECKPOINT).parent.mkdir(parents=True)
    (tmp_path / LAST_CHECKPOINT).write_bytes(b"half a checkpoint")
    checkpoint, why = resume_point(tmp_path, fresh=False)
    assert checkpoint is None and "unreadable" in why and not (tmp_path / LAST_CHECKPOINT).exists()
    assert resume_point(tmp_path, fresh=True)[0] is None


def test_the_run_folder_is_named_by_data_config_and_code_not_by_resume_from(tmp_path: Path) -> None:
    folder = run_folder(tmp_path, "v1", "small_cnn", CONFIG, "code")
    assert folder.parent == tmp_path / "runs" / "v1" and folder.name.startswith("small_cnn-seed0-")
    assert run_folder(tmp_path, "v1", "small_cnn", CONFIG.model_copy(update={"resume_from": Path("x.ckpt")}), "code") == folder
    assert run_folder(tmp_path, "v2", "small_cnn", CONFIG, "code") != folder
    assert run_folder(tmp_path, "v1", "small_cnn", CONFIG.model_copy(update={"max_epochs": 6}), "code") != folder
    assert run_folder(tmp_path, "v1", "small_cnn", CONFIG, "other code") != folder
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"1")
    with_weights = CONFIG.model_copy(update={"weights_path": weights})
    before = run_folder(tmp_path, "v1", "small_cnn", with_weights, "code")
    weights.write_bytes(b"2")
    assert run_folder(tmp_path, "v1", "small_cnn", with_weights, "code") != before


def test_one_process_at_a_time_trains_in_a_folder(tmp_path: Path) -> None:
    with training_in(tmp_path / "run"):
        with pytest.raises(RunFolderBusy, match=rf"pid {__import__('os').getpid()}\) is training into"):
            with training_in(tmp_path / "run"):
                pass
    with training_in(tmp_path / "run"):  # released when the holder is done (or dies)
        pass


def _killed_in_epoch(epoch: int, monkeypatch) -> None:  # noqa: ANN001 - pytest's monkeypatch
    """Fits die at the end of ``epoch``, after its metrics and before its checkpoint (until ``monkeypatch.undo``)."""
    record = fit._History.on_train_epoch_end

    def dies(self, trainer, pl_module) -> None:
        record(self, trainer, pl_module)
        if trainer.current_epoch == epoch:
            raise Killed

    monkeypatch.setattr(fit._History, "on_train_epoch_end", dies)


def test_a_distillation_or_fine_tune_killed_after_an_epoch_resumes_to_the_same_weights(snapshot, tmp_path: Path, monkeypatch) -> None:
    from tasks.compress.config import DistillConfig, PruneConfig
    from tasks.compress.distill import distill
    from tasks.compress.prune import prune_and_finetune

    teacher = fit.fit_classifier(snapshot, CONFIG.model_copy(update={"max_epochs": 2}), tmp_path / "teacher")
    config = DistillConfig(max_epochs=4)
    whole = distill(teacher, snapshot, config, CONFIG, tmp_path / "whole")
    _killed_in_epoch(2, monkeypatch)
    with pytest.raises(Killed):
        distill(teacher, snapshot, config, CONFIG, tmp_path / "killed")
    monkeypatch.undo()
    checkpoint, why = resume_point(tmp_path / "killed", fresh=False)
    assert "epoch 1 was done, continuing at 2" in why
    resumed = distill(teacher, snapshot, config, CONFIG, tmp_path / "killed", checkpoint)
    assert resumed.history == whole.history and len(whole.history) == 4
    a, b = (torch.load(t.state_dict_path, weights_only=True) for t in (whole, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)

    # The fine-tune after pruning: pruning again gives the architecture the checkpoint was saved from.
    prune = PruneConfig(keep_macs=0.6, finetune_epochs=3, round_to=None)
    model, pruned = prune_and_finetune(whole, teacher, snapshot, prune, CONFIG, tmp_path / "pruned-whole")
    _killed_in_epoch(1, monkeypatch)
    with pytest.raises(Killed):
        prune_and_finetune(whole, teacher, snapshot, prune, CONFIG, tmp_path / "pruned-killed")
    monkeypatch.undo()
    checkpoint, why = resume_point(tmp_path / "pruned-killed", fresh=False)
    assert "epoch 0 was done, continuing at 1" in why
    again, repruned = prune_and_finetune(whole, teacher, snapshot, prune, CONFIG, tmp_path / "pruned-killed", checkpoint)
    assert repruned == pruned and repruned.epochs_run == 3
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), again.state_dict().values(), strict=True))
    # Finished: reached again (its kept result lost), it starts over.
    assert resume_point(tmp_path / "pruned-killed", fresh=False)[0] is None

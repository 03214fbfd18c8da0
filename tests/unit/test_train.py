"""Training: seeded determinism, best-checkpoint selection, resume, history."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tasks.data.config import DataConfig
from tasks.data.imagefolder import ingest_imagefolder
from tasks.train.config import TrainConfig
from tasks.train.fit import fit_classifier
from tests.conftest import write_class_images


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory):
    root = write_class_images(tmp_path_factory.mktemp("imgs"), {"a": 30, "b": 30, "c": 30}, seed=3)
    return ingest_imagefolder(root, DataConfig(image_size=8), tmp_path_factory.mktemp("snaps"))


CONFIG = TrainConfig(max_epochs=3, batch_size=16, early_stopping_patience=10)


def test_same_seed_gives_identical_weights(snapshot, tmp_path: Path) -> None:
    first = fit_classifier(snapshot, CONFIG, tmp_path / "a")
    second = fit_classifier(snapshot, CONFIG, tmp_path / "b")
    a = torch.load(first.state_dict_path, weights_only=True)
    b = torch.load(second.state_dict_path, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.history == second.history
    other = fit_classifier(snapshot, CONFIG.model_copy(update={"seed": 1}), tmp_path / "c")
    c = torch.load(other.state_dict_path, weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_learns_separable_classes_and_records_every_epoch(snapshot, tmp_path: Path) -> None:
    trained = fit_classifier(snapshot, CONFIG.model_copy(update={"max_epochs": 6}), tmp_path)
    assert [r.epoch for r in trained.history] == list(range(6))
    assert trained.test_acc > 0.9  # brightness classes 60 grey levels apart
    best = min(trained.history, key=lambda r: r.val_loss)
    assert trained.best_epoch == best.epoch
    assert trained.load()(torch.zeros(1, 1, 8, 8)).shape == (1, 3)


def test_early_stopping_ends_before_max_epochs(snapshot, tmp_path: Path) -> None:
    config = CONFIG.model_copy(update={"max_epochs": 200, "early_stopping_patience": 1, "learning_rate": 0.5})
    trained = fit_classifier(snapshot, config, tmp_path)
    assert len(trained.history) < 200


def test_resume_continues_from_a_checkpoint(snapshot, tmp_path: Path) -> None:
    first = fit_classifier(snapshot, CONFIG.model_copy(update={"max_epochs": 2}), tmp_path / "a")
    last = first.checkpoint_path.parent / "last.ckpt"
    resumed = fit_classifier(snapshot, CONFIG.model_copy(update={"max_epochs": 4, "resume_from": last}), tmp_path / "b")
    # It continues at epoch 2; the epochs before come with the checkpoint, so the table is the whole run's.
    assert [r.epoch for r in resumed.history] == [0, 1, 2, 3] and resumed.history[:2] == first.history


class Payload:
    """An object whose unpickling would run code, hidden in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def test_resume_refuses_a_checkpoint_that_would_run_code(snapshot, tmp_path: Path) -> None:
    first = fit_classifier(snapshot, CONFIG.model_copy(update={"max_epochs": 1}), tmp_path / "a")
    checkpoint = torch.load(first.checkpoint_path.parent / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"] = {"note": Payload(tmp_path / "pwned")}
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        fit_classifier(snapshot, CONFIG.model_copy(update={"resume_from": tmp_path / "evil.ckpt"}), tmp_path / "b")
    assert not (tmp_path / "pwned").exists()

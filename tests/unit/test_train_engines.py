"""Training engines: Lightning DDP over two CPU processes (gloo), bf16-mixed, channels_last, and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.export.backends import TorchBackend
from tasks.export.measure import accuracy
from tasks.train.augment import AugmentConfig, build_augmentation
from tasks.train.config import TrainConfig
from tasks.train.fit import fit_classifier
from tasks.train.trained import TrainedModel

QUICK = {"model": "tiny_cnn", "max_epochs": 3, "batch_size": 64, "early_stopping_patience": 10}


def test_ddp_on_two_cpu_processes_fits_a_model_that_loads_with_metrics_of_both_ranks(digits_snapshot, tmp_path: Path) -> None:
    epochs: list[int] = []
    trained = fit_classifier(
        digits_snapshot, TrainConfig(devices=2, strategy="ddp", **QUICK), tmp_path / "ddp",
        on_epoch=lambda record: epochs.append(record.epoch),
    )
    assert epochs == [0, 1, 2]  # progress reached this process epoch by epoch
    assert [r.epoch for r in trained.history] == [0, 1, 2]
    state = torch.load(trained.checkpoint_path, map_location="cpu", weights_only=True)
    assert {"state_dict", "epoch"} <= set(state)
    outcome = __import__("json").loads((tmp_path / "ddp" / "launch" / "outcome.json").read_text())
    assert outcome["processes"] == 2
    # The weights learnt, and the logged accuracies are of the whole split (gathered over both ranks), not of one half:
    # recomputed here on every validation image from the best weights, they agree within DDP's padding (a row per rank).
    model = TrainedModel.model_validate(trained.model_dump()).load()
    inputs, labels = digits_snapshot.model_inputs("val")
    recomputed = accuracy(TorchBackend(model), inputs, labels)
    best = min(trained.history, key=lambda r: r.val_loss)
    assert recomputed > 0.25 and abs(best.val_acc - recomputed) <= 2 / len(labels) + 1e-6
    test_inputs, test_labels = digits_snapshot.model_inputs("test")
    assert abs(trained.test_acc - accuracy(TorchBackend(model), test_inputs, test_labels)) <= 2 / len(test_labels) + 1e-6


def test_a_failing_rank_is_reported_with_its_output_and_leaves_no_process(digits_snapshot, tmp_path: Path) -> None:
    import time

    from tasks.train.launch import DistributedFitFailed

    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"not a checkpoint")  # the ranks start, then fail loading it
    with pytest.raises(DistributedFitFailed, match="exit code") as failure:
        fit_classifier(digits_snapshot, TrainConfig(devices=2, strategy="ddp", resume_from=bad, **QUICK), tmp_path / "ddp")
    assert "last.ckpt" in str(failure.value) or "pickle" in str(failure.value).lower()

    def ranks() -> list[str]:
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                text = cmdline.read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(tmp_path / "ddp" / "launch") in text:
                found.append(text)
        return found

    deadline = time.monotonic() + 10
    while ranks() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ranks() == []


@pytest.mark.parametrize("settings", [{"precision": "bf16-mixed"}, {"channels_last": True}])
def test_bf16_mixed_and_channels_last_train_and_export_plain_fp32_weights(digits_snapshot, tmp_path: Path, settings) -> None:
    trained = fit_classifier(digits_snapshot, TrainConfig(**QUICK, **settings), tmp_path / "fit")
    model = trained.load()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())  # channels_last is a training layout only
    inputs, labels = digits_snapshot.model_inputs("test")
    assert accuracy(TorchBackend(model), inputs, labels) > 0.5


def test_augmentation_changes_training_images_only_and_is_seeded(digits_snapshot) -> None:
    config = AugmentConfig(rotate_degrees=20, shear_degrees=5, zoom=0.1, shift=0.1, brightness=0.3, contrast=0.2)
    augment = build_augmentation(config)
    batch = torch.from_numpy(digits_snapshot.model_inputs("train")[0][:32])
    torch.manual_seed(1)
    first = augment(batch)
    torch.manual_seed(1)
    again = augment(batch)
    assert torch.equal(first, again) and not torch.equal(first, batch)
    assert first.shape == batch.shape and float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    # Each image gets its own draw: no two images moved the same way.
    moved = (first - batch).flatten(1).abs().mean(1)
    assert len(set(np.round(moved.numpy(), 6))) == len(moved)
    assert build_augmentation(AugmentConfig()) is None and not AugmentConfig().horizontal_flip


def test_an_augmented_fit_is_reproducible_and_differs_from_a_plain_one(digits_snapshot, tmp_path: Path) -> None:
    augment = {"rotate_degrees": 15, "zoom": 0.1, "brightness": 0.2}
    a = fit_classifier(digits_snapshot, TrainConfig(augment=augment, **QUICK), tmp_path / "a")
    b = fit_classifier(digits_snapshot, TrainConfig(augment=augment, **QUICK), tmp_path / "b")
    plain = fit_classifier(digits_snapshot, TrainConfig(**QUICK), tmp_path / "plain")
    weights = [torch.load(t.state_dict_path, weights_only=True) for t in (a, b, plain)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    # Validation saw the images as they are: the same epoch-0 val accuracy formula, not augmented copies.
    assert a.history[0].val_acc > 0.3

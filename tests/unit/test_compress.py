"""Distillation, pruning with fine-tune, INT8 within the budget, and the compression plan, on the embedded digits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch.nn import functional as F

from tasks.compress.config import CompressConfig, DistillConfig, PruneConfig
from tasks.compress.distill import distill, distillation_loss
from tasks.compress.onnx_int8 import quantize_onnx_int8
from tasks.compress.openvino_int8 import quantize_openvino_int8, quantize_openvino_int8_within_budget
from tasks.compress.prune import prune_and_finetune
from tasks.export.backends import OnnxRuntimeBackend, OpenVinoBackend, TorchBackend
from tasks.export.fp32 import export_fp32_checked
from tasks.export.measure import accuracy
from tasks.train.config import TrainConfig
from tasks.train.fit import fit_classifier

TRAIN = TrainConfig(max_epochs=12, seed=0)
BUDGET_PP = 1.0  # the build's default accuracy budget


@pytest.fixture(scope="module")
def teacher(digits_snapshot, tmp_path_factory: pytest.TempPathFactory):
    return fit_classifier(digits_snapshot, TRAIN, tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def student(teacher, digits_snapshot, tmp_path_factory: pytest.TempPathFactory):
    return distill(teacher, digits_snapshot, DistillConfig(max_epochs=12), TRAIN, tmp_path_factory.mktemp("student"))


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_distillation_loss_blends_soft_targets_and_labels() -> None:
    torch.manual_seed(0)
    student, teacher, labels = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    hard = F.cross_entropy(student, labels)
    assert torch.allclose(distillation_loss(student, teacher, labels, 4.0, 0.0), hard)
    assert distillation_loss(teacher, teacher, labels, 4.0, 1.0).abs() < 1e-6  # matching the teacher costs nothing
    soft = distillation_loss(student, teacher, labels, 2.0, 1.0)
    expected = 4.0 * F.kl_div(F.log_softmax(student / 2, 1), F.softmax(teacher / 2, 1), reduction="batchmean")
    assert torch.allclose(soft, expected, atol=1e-6)
    assert torch.allclose(distillation_loss(student, teacher, labels, 2.0, 0.3), 0.3 * soft + 0.7 * hard, atol=1e-6)


def test_the_distilled_student_matches_the_same_student_without_teacher_with_fewer_parameters(
    teacher, student, digits_snapshot, tmp_path: Path
) -> None:
    alone = fit_classifier(
        digits_snapshot, TRAIN.model_copy(update={"model": "tiny_cnn", "learning_rate": 5e-3}), tmp_path / "alone"
    )
    assert _params(student.load()) < 0.35 * _params(teacher.load())
    assert student.model_name == "tiny_cnn" and student.test_acc >= 0.93
    # 261 test images: two points is five images, the run-to-run noise of a 12-epoch fit on them.
    assert student.test_acc >= alone.test_acc - 0.02, (student.test_acc, alone.test_acc)


def test_the_teacher_is_frozen_while_the_student_learns(teacher, student) -> None:
    # Neither its weights nor its batch-norm statistics move: training switches modules to train mode each epoch.
    saved = torch.load(teacher.state_dict_path, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in teacher.load().state_dict().items())
    checkpoint = torch.load(student.checkpoint_path, weights_only=True)["state_dict"]
    teacher_in_checkpoint = {k.removeprefix("teacher."): v for k, v in checkpoint.items() if k.startswith("teacher.")}
    assert teacher_in_checkpoint and all(torch.equal(saved[k], v) for k, v in teacher_in_checkpoint.items())


def test_pruning_then_fine_tuning_keeps_accuracy_and_exports_with_parity(teacher, student, digits_snapshot, tmp_path: Path) -> None:
    config = PruneConfig(keep_macs=0.5, finetune_epochs=6, round_to=None)  # tiny_cnn's 16 channels: 8 would be too coarse
    model, pruned = prune_and_finetune(student, teacher, digits_snapshot, config, TRAIN, tmp_path / "prune")
    # tiny_cnn has 16 and 32 channels: one pruning step moves MACs by several percent, so the last step may undershoot.
    assert 0.5 - 0.06 <= pruned.result.macs_ratio <= 0.5 * (1 + config.tolerance)
    assert pruned.result.params_after == _params(model) < _params(student.load())
    inputs, labels = digits_snapshot.model_inputs("test")
    assert accuracy(TorchBackend(model), inputs, labels) == pytest.approx(pruned.test_acc)
    assert pruned.test_acc >= student.test_acc - 0.05
    _, _, parity = export_fp32_checked(model, inputs, tmp_path / "variants", 1e-3, prefix="pruned-")
    assert [p.variant for p in parity] == ["pruned-onnx-fp32", "pruned-openvino-fp32"] and all(p.passed for p in parity)


def test_int8_variants_stay_within_the_budget_on_the_digits_test_split(teacher, digits_snapshot, tmp_path: Path) -> None:
    inputs, labels = digits_snapshot.model_inputs("test")
    onnx_path, ir_path, _ = export_fp32_checked(teacher.load(), inputs, tmp_path, 1e-3)
    fp32 = accuracy(TorchBackend(teacher.load()), inputs, labels)
    calibration = digits_snapshot.model_inputs("train")[0][:300]
    onnx_int8 = quantize_onnx_int8(onnx_path, calibration, tmp_path / "q" / "model.onnx")
    ov_int8 = quantize_openvino_int8(ir_path, calibration, tmp_path / "qov" / "model.xml", fast_bias_correction=False)
    for backend in (OnnxRuntimeBackend(onnx_int8), OpenVinoBackend(ov_int8)):
        assert accuracy(backend, inputs, labels) >= fp32 - BUDGET_PP / 100, backend.name


def test_accuracy_control_runs_when_plain_int8_misses_the_budget_and_brings_the_drop_within_it(
    teacher, digits_snapshot, tmp_path: Path
) -> None:
    _, ir_path, _ = export_fp32_checked(teacher.load(), digits_snapshot.model_inputs("test")[0], tmp_path, 1e-3)
    val_inputs, val_labels = digits_snapshot.model_inputs("val")
    # A deliberately poor calibration set (8 images, all-symmetric preset) so plain INT8 has something to lose.
    calibration = digits_snapshot.model_inputs("train")[0][:8]
    settings = {"preset": "performance"}
    plain = quantize_openvino_int8_within_budget(
        ir_path, calibration, val_inputs, val_labels, 0.0, tmp_path / "never" / "model.xml", "never", **settings
    )
    assert not plain.accuracy_control and plain.int8_val_accuracy == plain.plain_val_accuracy
    assert plain.quantized_ops > 0
    # A budget just under plain INT8's drop: auto must switch to accuracy control and meet it.
    budget = max(plain.drop_pp - 0.2, 0.0)
    auto = quantize_openvino_int8_within_budget(
        ir_path, calibration, val_inputs, val_labels, budget, tmp_path / "auto" / "model.xml", "auto", **settings
    )
    assert auto.accuracy_control is (plain.drop_pp > 0)
    assert auto.drop_pp <= budget + 1e-6
    assert "FakeQuantize" in auto.path.read_text() or "FakeConvert" in auto.path.read_text()  # still (partly) INT8
    # Within budget already: auto keeps the plain result.
    relaxed = quantize_openvino_int8_within_budget(
        ir_path, calibration, val_inputs, val_labels, plain.drop_pp + 1.0, tmp_path / "relaxed" / "model.xml", "auto", **settings
    )
    assert not relaxed.accuracy_control and relaxed.int8_val_accuracy == plain.int8_val_accuracy


@pytest.mark.parametrize(
    ("plan", "message"),
    [(["int8", "prune"], "out of order"), (["distill", "distill"], "repeats a step"), (["shrink"], "distill")],
)
def test_a_bad_plan_is_refused_naming_the_allowed_steps(plan: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CompressConfig(plan=plan)


def test_every_step_is_optional() -> None:
    assert CompressConfig(plan=[]).plan == []
    assert CompressConfig(plan=["prune"]).plan == ["prune"]
    assert CompressConfig().plan == ["distill", "prune", "int8"]

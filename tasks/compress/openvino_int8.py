"""Static INT8 quantization of an OpenVINO model with NNCF, plain or with accuracy control."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import nncf
import numpy as np
import openvino as ov
from pydantic import BaseModel

_PRESETS = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}


def _quiet_nncf() -> None:
    """NNCF logs every algorithm step at INFO on stdout; the step logs what matters, so keep warnings only."""
    nncf.set_log_level(logging.WARNING)


def _batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    images = images.astype(np.float32)
    return [images[i : i + batch_size] for i in range(0, len(images), batch_size)]


class _Labelled:
    """The validation set one (input, label) pair at a time, read when NNCF iterates it (it does, more than once)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(len(self.labels)):
            yield np.asarray(self.images[i : i + 1], dtype=np.float32), self.labels[i : i + 1]


def quantize_openvino_int8(
    ir_path: Path,
    calibration_images: np.ndarray,
    out_path: Path,
    preset: str = "mixed",
    fast_bias_correction: bool = True,
    batch_size: int = 1,
) -> Path:
    """Write an INT8 IR of ``ir_path`` to ``out_path``, calibrated with NNCF on ``calibration_images``.

    Args:
        ir_path: the FP32 OpenVINO IR (``.xml``).
        calibration_images: float32 N x C x H x W in [0, 1], from the train split.
        out_path: the INT8 IR (``.xml``; weights in the ``.bin`` beside it).
        preset: ``mixed`` (asymmetric activations) or ``performance`` (all symmetric).
        fast_bias_correction: NNCF's fast bias correction; False runs the full, slower one.
        batch_size: images per calibration step.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _quiet_nncf()
    model = ov.Core().read_model(str(ir_path))
    quantized = nncf.quantize(
        model,
        nncf.Dataset(_batches(calibration_images, batch_size)),
        subset_size=len(calibration_images),
        preset=_PRESETS[preset],
        fast_bias_correction=fast_bias_correction,
    )
    ov.save_model(quantized, str(out_path), compress_to_fp16=False)
    return out_path


def quantize_openvino_int8_with_accuracy_control(
    ir_path: Path,
    calibration_images: np.ndarray,
    validation_images: np.ndarray,
    validation_labels: np.ndarray,
    max_drop: float,
    out_path: Path,
    preset: str = "mixed",
    fast_bias_correction: bool = True,
) -> Path:
    """Like ``quantize_openvino_int8``, but NNCF keeps the most sensitive layers in FP32 until the
    top-1 accuracy on the validation set drops by at most ``max_drop`` (absolute, e.g. 0.01 = 1 pp).

    Args:
        validation_images: float32 N x C x H x W in [0, 1]; the validation split, never the test split.
        validation_labels: their class indices.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _quiet_nncf()
    model = ov.Core().read_model(str(ir_path))
    labelled = _Labelled(validation_images, validation_labels)

    def validate(compiled: ov.CompiledModel, items) -> float:  # noqa: ANN001 - NNCF passes an iterable of items
        output = compiled.output(0)
        hits = [int(np.argmax(compiled(x)[output], axis=1)[0] == y[0]) for x, y in items]
        return float(np.mean(hits))

    quantized = nncf.quantize_with_accuracy_control(
        model,
        nncf.Dataset(_batches(calibration_images, 1)),
        nncf.Dataset(labelled, lambda item: item[0]),
        validation_fn=validate,
        max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        preset=_PRESETS[preset],
        subset_size=len(calibration_images),
        fast_bias_correction=fast_bias_correction,
    )
    ov.save_model(quantized, str(out_path), compress_to_fp16=False)
    return out_path


def quantized_op_count(ir_path: Path) -> int:
    """FakeQuantize/FakeConvert operations in an IR: 0 means nothing in it runs in INT8."""
    model = ov.Core().read_model(str(ir_path))
    return sum(op.get_type_name() in ("FakeQuantize", "FakeConvert") for op in model.get_ops())


class OpenVinoInt8(BaseModel):
    """An NNCF INT8 IR and how it did on the validation split."""

    path: Path
    quantized_ops: int
    fp32_val_accuracy: float
    int8_val_accuracy: float
    plain_val_accuracy: float | None
    accuracy_control: bool

    @property
    def drop_pp(self) -> float:
        return (self.fp32_val_accuracy - self.int8_val_accuracy) * 100


def quantize_openvino_int8_within_budget(
    ir_path: Path,
    calibration_images: np.ndarray,
    validation_images: np.ndarray,
    validation_labels: np.ndarray,
    budget_pp: float,
    out_path: Path,
    accuracy_control: str = "auto",
    preset: str = "mixed",
    fast_bias_correction: bool = True,
) -> OpenVinoInt8:
    """Plain NNCF INT8 first; NNCF's accuracy-aware mode when that drops more than ``budget_pp`` on validation.

    Args:
        accuracy_control: ``auto`` (as above), ``always`` (skip the plain attempt) or ``never``.
    """
    from tasks.export.backends import OpenVinoBackend
    from tasks.export.measure import accuracy

    settings = {"preset": preset, "fast_bias_correction": fast_bias_correction}
    fp32 = accuracy(OpenVinoBackend(ir_path), validation_images, validation_labels)
    plain = None
    if accuracy_control != "always":
        quantize_openvino_int8(ir_path, calibration_images, out_path, **settings)
        plain = accuracy(OpenVinoBackend(out_path), validation_images, validation_labels)
    control = accuracy_control == "always" or (
        accuracy_control == "auto" and (fp32 - plain) * 100 > budget_pp + 1e-9
    )
    if control:
        quantize_openvino_int8_with_accuracy_control(
            ir_path, calibration_images, validation_images, validation_labels, budget_pp / 100.0, out_path, **settings
        )
    final = accuracy(OpenVinoBackend(out_path), validation_images, validation_labels) if control else plain
    return OpenVinoInt8(
        path=out_path,
        quantized_ops=quantized_op_count(out_path),
        fp32_val_accuracy=fp32, int8_val_accuracy=final, plain_val_accuracy=plain, accuracy_control=control
    )

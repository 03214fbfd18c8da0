"""Static INT8 quantization of an ONNX model with ONNX Runtime (QDQ, per-channel weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class _BatchReader(CalibrationDataReader):
    """Feeds calibration images to the calibrator."""

    # One image per call: ONNX Runtime's histogram calibrators (entropy, percentile) stack the
    # collected outputs and fail on a ragged last batch.
    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 1) -> None:
        self._batches = iter(
            [{input_name: images[i : i + batch_size]} for i in range(0, len(images), batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx_int8(
    onnx_path: Path,
    calibration_images: np.ndarray,
    out_path: Path,
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool = True,
) -> Path:
    """Write an INT8 QDQ model of ``onnx_path`` to ``out_path``, calibrated on ``calibration_images``.

    Args:
        onnx_path: the FP32 model (external weights beside it are read).
        calibration_images: float32 N x C x H x W in [0, 1], from the train split.
        out_path: the INT8 model, a single self-contained file.
        method: ``minmax``, ``entropy`` or ``percentile``.
        per_channel: per-output-channel weight scales (better accuracy for convs).
        reduce_range: 7-bit weights, so that x86 CPUs without VNNI (whose u8s8 kernels
            add pairs of products in saturating int16) compute the same result as others.
    """
    import onnx

    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Shape inference and graph clean-up first, as ONNX Runtime recommends before static quantization.
    prepared = out_path.with_name(out_path.stem + ".prep.onnx")
    quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=False)
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    try:
        quantize_static(
            str(prepared),
            str(out_path),
            _BatchReader(input_name, calibration_images.astype(np.float32)),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=_METHODS[method],
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
    finally:
        prepared.unlink(missing_ok=True)
    return out_path

"""Static INT8 quantization of an OpenVINO model with NNCF post-training quantization."""

from __future__ import annotations

from pathlib import Path

import nncf
import numpy as np
import openvino as ov


def quantize_openvino_int8(
    ir_path: Path, calibration_images: np.ndarray, out_path: Path, batch_size: int = 1
) -> Path:
    """Write an INT8 IR of ``ir_path`` to ``out_path``, calibrated with NNCF on ``calibration_images``.

    Args:
        ir_path: the FP32 OpenVINO IR (``.xml``).
        calibration_images: float32 N x C x H x W in [0, 1], from the train split.
        out_path: the INT8 IR (``.xml``; weights in the ``.bin`` beside it).
        batch_size: images per calibration step.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.Core().read_model(str(ir_path))
    images = calibration_images.astype(np.float32)
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches),
        subset_size=len(images),
        preset=nncf.QuantizationPreset.MIXED,
    )
    ov.save_model(quantized, str(out_path), compress_to_fp16=False)
    return out_path

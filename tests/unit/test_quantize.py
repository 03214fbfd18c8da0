"""INT8 post-training quantization with ONNX Runtime and NNCF on a small exported model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tasks.data.contract import ImageInput
from tasks.compress.calibration import calibration_sample
from tasks.compress.onnx_int8 import quantize_onnx_int8
from tasks.compress.openvino_int8 import quantize_openvino_int8
from tasks.export.backends import OnnxRuntimeBackend, OpenVinoBackend
from tasks.export.onnx import export_onnx
from tasks.export.openvino import export_openvino
from tasks.export.parity import compare_logits
from tasks.train.models import build_model

GREY = ImageInput(channels=1, image_size=16)


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("fp32")
    onnx_path = export_onnx(build_model("small_cnn", 4, GREY).eval(), torch.rand(2, 1, 16, 16), out / "onnx" / "model.onnx")
    ir_path = export_openvino(onnx_path, out / "ov" / "model.xml")
    # 37 images: calibration batches must cope with any count, not only multiples of a batch size.
    images = np.random.default_rng(0).random((37, 1, 16, 16), dtype=np.float32)
    return onnx_path, ir_path, images


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_onnx_int8_is_qdq_and_tracks_fp32(fp32, method: str, tmp_path: Path) -> None:
    onnx_path, _, images = fp32
    int8 = quantize_onnx_int8(onnx_path, images, tmp_path / "model.onnx", method=method)
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 3
    result = compare_logits("onnx-int8", OnnxRuntimeBackend(onnx_path).predict(images), OnnxRuntimeBackend(int8).predict(images), 1.0)
    assert result.top1_agreement >= 0.8
    assert int8.stat().st_size < sum(p.stat().st_size for p in onnx_path.parent.iterdir())


def test_openvino_int8_tracks_fp32(fp32, tmp_path: Path) -> None:
    _, ir_path, images = fp32
    int8 = quantize_openvino_int8(ir_path, images, tmp_path / "model.xml")
    assert "FakeQuantize" in int8.read_text() or "FakeConvert" in int8.read_text()
    result = compare_logits("openvino-int8", OpenVinoBackend(ir_path).predict(images), OpenVinoBackend(int8).predict(images), 1.0)
    assert result.top1_agreement >= 0.8


def test_calibration_sample_is_seeded_and_bounded() -> None:
    images = np.arange(100).reshape(100, 1, 1, 1)
    first = calibration_sample(images, 10, seed=3)
    assert len(first) == 10 and np.array_equal(first, calibration_sample(images, 10, seed=3))
    assert not np.array_equal(first, calibration_sample(images, 10, seed=4))
    assert len(calibration_sample(images, 500, seed=0)) == 100

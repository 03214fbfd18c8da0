"""Export parity: ONNX and OpenVINO reproduce PyTorch's logits; a wrong export is caught."""

from __future__ import annotations


import numpy as np
import onnx
import pytest
import torch

from tasks.data.contract import ImageInput
from tasks.export.backends import OnnxRuntimeBackend, OpenVinoBackend, TorchBackend
from tasks.export.onnx import export_onnx
from tasks.export.openvino import export_openvino
from tasks.export.parity import ParityError, check_parity, compare_logits
from tasks.host import usable_cpus
from tasks.train.models import build_model

GREY = ImageInput(channels=1, image_size=16)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = build_model("small_cnn", 5, GREY).eval()
    out = tmp_path_factory.mktemp("export")
    onnx_path = export_onnx(model, torch.rand(2, 1, 16, 16), out / "onnx" / "model.onnx")
    ir_path = export_openvino(onnx_path, out / "ov" / "model.xml")
    images = np.random.default_rng(0).random((40, 1, 16, 16), dtype=np.float32)
    return model, onnx_path, ir_path, images


def test_onnx_has_a_dynamic_batch_axis(exported) -> None:
    _, onnx_path, _, images = exported
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    batch_dim = graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    backend = OnnxRuntimeBackend(onnx_path)
    assert backend.predict(images[:1]).shape == (1, 5)
    assert backend.predict(images).shape == (40, 5)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_fp32_exports_match_pytorch(exported, runtime: str) -> None:
    model, onnx_path, ir_path, images = exported
    candidate = OnnxRuntimeBackend(onnx_path) if runtime == "onnxruntime" else OpenVinoBackend(ir_path)
    result = check_parity(runtime, TorchBackend(model), candidate, images, tolerance=1e-4)
    assert result.passed and result.top1_agreement == 1.0
    assert result.max_abs_diff < 1e-4


def test_a_diverging_variant_is_refused(exported) -> None:
    model, onnx_path, _, images = exported
    other = build_model("small_cnn", 5, GREY).eval()  # different random weights: a wrong export
    with pytest.raises(ParityError, match="differs from the PyTorch model"):
        check_parity("onnx-fp32", TorchBackend(other), OnnxRuntimeBackend(onnx_path), images, tolerance=1e-4)


def test_compare_logits_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        compare_logits("x", np.zeros((2, 3)), np.zeros((2, 4)), 1e-3)


def test_nan_logits_never_pass() -> None:
    result = compare_logits("x", np.zeros((2, 3)), np.full((2, 3), np.nan), 1e-3)
    assert not result.passed


def test_exported_graph_carries_no_local_paths(exported) -> None:
    _, onnx_path, _, _ = exported
    graph = onnx_path.read_bytes()
    assert b"site-packages" not in graph and b".py" not in graph


def test_openvino_on_part_of_the_cpus_leaves_its_threads_unpinned(exported) -> None:
    # Pinned, every process given a part of the CPUs (scoring or Dask workers) would run on the first cores.
    _, _, ir_path, images = exported
    whole = OpenVinoBackend(ir_path)
    if usable_cpus() > 1:
        part = OpenVinoBackend(ir_path, threads=usable_cpus() - 1)
        assert part.compiled.get_property("ENABLE_CPU_PINNING") is False
        np.testing.assert_allclose(part.predict(images), whole.predict(images), rtol=1e-5, atol=1e-6)

"""What a user would run instead of Lepton's variants, each in its one-line default, and the CPU's practical peak.

Shared by the benchmark scripts; not part of the test run.

- ``torch.compile`` (default inductor) of the trained model;
- a plain ``onnxruntime.InferenceSession`` on ``onnx-fp32``;
- a plain OpenVINO ``compile_model`` on the ``openvino-fp32`` IR, no hints (bf16 on a bf16 CPU).

The practical peak is a 1024³ GEMM in ONNX Runtime (FP32 ``MatMul``, INT8 ``MatMulInteger``,
which uses VNNI where the CPU has it), at the benchmark's thread count.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tasks.export.measure import latency_ms
from tasks.registry.manifest import ReleaseManifest
from tasks.train.models import build_model


class PlainOnnxRuntime:
    """``onnxruntime.InferenceSession(path)``: every default (threads, spinning, graph optimisations)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output], {self.input: batch})[0]


class PlainOpenVino:
    """``openvino.Core().compile_model(xml, "CPU")``: no hints, so a bf16 CPU infers in bf16."""

    def __init__(self, path: Path) -> None:
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(path), "CPU")

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(batch)[self.compiled.output(0)])


class TorchCompiled:
    """``torch.compile(model)`` with the default inductor back end, in inference mode."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = torch.compile(model.eval())

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).numpy()


def baselines(manifest: ReleaseManifest, release_dir: Path) -> dict[str, object]:
    """The three baselines of a release whose FP32 variants are in ``release_dir``, by name."""
    model = build_model(manifest.training.model, len(manifest.classes), manifest.input)
    torch_fp32 = manifest.variant("torch-fp32")
    model.load_state_dict(torch.load(release_dir / "torch-fp32" / torch_fp32.entrypoint, weights_only=True))
    onnx_fp32, ov_fp32 = manifest.variant("onnx-fp32"), manifest.variant("openvino-fp32")
    return {
        "torch.compile": TorchCompiled(model),
        "plain onnxruntime": PlainOnnxRuntime(release_dir / "onnx-fp32" / onnx_fp32.entrypoint),
        "plain openvino": PlainOpenVino(release_dir / "openvino-fp32" / ov_fp32.entrypoint),
    }


def speedup_table(served: tuple[float, float], baselines: dict[str, tuple[float, float]]) -> list[dict[str, str]]:
    """Rows of the served variant's speed-up over each baseline, from p50 ms at batch 1 and 64."""
    return [
        {
            "baseline": name,
            "p50_ms_b1": f"{b1:.3f}",
            "served_speedup_b1": f"{b1 / served[0]:.2f}",
            "p50_ms_b64": f"{b64:.3f}",
            "served_speedup_b64": f"{b64 / served[1]:.2f}",
        }
        for name, (b1, b64) in baselines.items()
    ]


def speedup_rows(
    served: str, backends: dict[str, object], images: np.ndarray, repeats: int
) -> list[dict[str, str]]:
    """The served back end (key ``served``) against every other, timed now, in this process, on ``images``."""
    timed = {
        name: (latency_ms(b, images, 1, repeats, warmup=20)[0], latency_ms(b, images, 64, max(repeats // 4, 10), warmup=5)[0])
        for name, b in backends.items()
    }
    return speedup_table(timed.pop(served), timed)


def gemm_peak_gmacs(precision: str, threads: int, size: int = 1024, repeats: int = 10) -> float:
    """Practical peak of this CPU in GMAC/s: a ``size``³ GEMM in ONNX Runtime, FP32 or INT8 (VNNI where present)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if precision == "int8":
        op, a_type, y_type = "MatMulInteger", TensorProto.UINT8, TensorProto.INT32
        weights = rng.integers(-127, 127, (size, size)).astype(np.int8)
        inputs = rng.integers(0, 255, (size, size)).astype(np.uint8)
    else:
        op, a_type, y_type = "MatMul", TensorProto.FLOAT, TensorProto.FLOAT
        weights = rng.standard_normal((size, size)).astype(np.float32)
        inputs = rng.random((size, size), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node(op, ["a", "b"], ["y"])], "gemm",
        [helper.make_tensor_value_info("a", a_type, [size, size])],
        [helper.make_tensor_value_info("y", y_type, [size, size])],
        [numpy_helper.from_array(weights, "b")],
    )
    path = Path(tempfile.mkdtemp(prefix="lepton-peak-")) / f"{precision}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, {"a": inputs})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {"a": inputs})
        times.append(time.perf_counter() - start)
    return size**3 / float(np.median(times)) / 1e9

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
    """``openvino.Core().compile_model(xml, "CPU")``: no hints, so a bf16 CPU infers in bf16.

    ``shape`` (one input's channels, height, width) reshapes the IR first, for timing at another size.
    """

    def __init__(self, path: Path, shape: list[int] | None = None) -> None:
        import openvino as ov

        model = ov.Core().read_model(str(path))
        if shape is not None:
            model.reshape(ov.PartialShape([-1, *shape]))
        self.compiled = ov.Core().compile_model(model, "CPU")

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


class _OpenVinoAtSize:
    """An OpenVINO IR reshaped to another spatial size, compiled with the variant's own precision hint."""

    def __init__(self, path: Path, shape: list[int], precision: str, threads: int) -> None:
        import openvino as ov

        model = ov.Core().read_model(str(path))
        model.reshape(ov.PartialShape([-1, *shape]))
        hint = "bf16" if precision == "bf16" else "f32"
        self.compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads})

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.compiled(batch)[self.compiled.output(0)])


def open_at_size(manifest: ReleaseManifest, release_dir: Path, name: str, size: int, threads: int) -> object:
    """Variant ``name`` of a release, opened for ``size`` x ``size`` inputs of the release's channels.

    The convolutional models end in a global average pool, so only the graphs' declared input size
    pins them: an ONNX copy gets symbolic height and width (ONNX Runtime infers the rest), an
    OpenVINO IR is reshaped; torch takes any size as it is.
    """
    import onnx

    from tasks.export.backends import OnnxRuntimeBackend
    from tasks.registry.serving import open_variant

    variant = manifest.variant(name)
    path = release_dir / name / variant.entrypoint
    shape = [manifest.input.channels, size, size]
    if variant.runtime == "openvino":
        return _OpenVinoAtSize(path, shape, variant.precision, threads)
    if variant.runtime == "torch":
        return open_variant(manifest, release_dir, name)
    model = onnx.load(str(path))
    for dim, label in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], ("height", "width")):
        dim.ClearField("dim_value")
        dim.dim_param = label
    del model.graph.value_info[:]  # shapes inferred at the trained size would contradict the new one
    resized = Path(tempfile.mkdtemp(prefix="lepton-size-")) / f"{name}.onnx"
    onnx.save(model, str(resized))
    return OnnxRuntimeBackend(resized, threads=threads)


def timed_at_size(manifest: ReleaseManifest, release_dir: Path, size: int, threads: int, repeats: int) -> list[dict[str, str]]:
    """Every variant of a release (and plain OpenVINO) timed at ``size`` x ``size``: p50 at batch 1 and 64, speed-up vs eager."""
    from tasks.export.measure import torch_threads

    images = np.random.default_rng(0).random((64, manifest.input.channels, size, size), dtype=np.float32)
    timed = {}
    with torch_threads(threads):
        for variant in manifest.variants:
            try:
                backend = open_at_size(manifest, release_dir, variant.name, size, threads)
                timed[variant.name] = (
                    latency_ms(backend, images, 1, repeats, warmup=3)[0],
                    latency_ms(backend, images, 64, max(repeats // 4, 3), warmup=1)[0],
                )
            except Exception as exc:  # noqa: BLE001 - e.g. a pooling whose exported kernel is tied to the trained size
                timed[variant.name] = (float("nan"), float("nan"))
                print(f"{variant.name} does not run at {size}x{size}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        plain = PlainOpenVino(
            release_dir / "openvino-fp32" / manifest.variant("openvino-fp32").entrypoint, [manifest.input.channels, size, size]
        )
        timed["plain openvino (default precision)"] = (
            latency_ms(plain, images, 1, repeats, warmup=3)[0], latency_ms(plain, images, 64, max(repeats // 4, 3), warmup=1)[0]
        )
    eager = timed["torch-fp32"]
    return [
        {
            "variant": name,
            "served": "<-" if name == manifest.served.name else "",
            f"p50_b1_ms@{size}": f"{b1:.2f}",
            f"p50_b64_ms@{size}": f"{b64:.1f}",
            "speedup_b1": f"{eager[0] / b1:.2f}",
            "speedup_b64": f"{eager[1] / b64:.2f}",
        }
        for name, (b1, b64) in timed.items()
    ]

"""Symmetric inference back ends: PyTorch, ONNX Runtime and OpenVINO behind one small interface.

Each back end loads a variant from disk (or wraps a torch module) and maps a
float32 N x C x H x W batch in [0, 1] to float32 logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Backend(Protocol):
    """What evaluation, parity checks and benchmarks need from a runtime."""

    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N x classes) for a float32 batch (N x C x H x W)."""
        ...


class TorchBackend:
    """PyTorch eager execution of a module, on CPU, in inference mode."""

    name = "torch"

    def __init__(self, model) -> None:  # noqa: ANN001 - torch.nn.Module; torch imported lazily
        self.model = model.eval()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()


class OnnxRuntimeBackend:
    """ONNX Runtime CPU session over a ``.onnx`` file (external weights beside it are picked up)."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]


class OpenVinoBackend:
    """OpenVINO CPU compiled model over an IR ``.xml`` (weights in the ``.bin`` beside it).

    The precision hint defaults to f32: on CPUs with bf16 support OpenVINO would
    otherwise infer in bf16 and lose accuracy that the FP32 variant must keep.
    """

    name = "openvino"

    def __init__(self, path: Path, precision: str = "f32", threads: int | None = None) -> None:
        import openvino as ov

        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.output = self.compiled.output(0)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        result = self.compiled(np.ascontiguousarray(batch, dtype=np.float32))
        return np.asarray(result[self.output])


def load_backend(runtime: str, path: Path, threads: int | None = None) -> Backend:
    """Open a variant file with the runtime that reads it (``onnxruntime`` or ``openvino``).

    Raises:
        ValueError: an unknown runtime name.
    """
    if runtime == "onnxruntime":
        return OnnxRuntimeBackend(path, threads=threads)
    if runtime == "openvino":
        return OpenVinoBackend(path, threads=threads)
    raise ValueError(f"unknown runtime {runtime!r}; allowed: onnxruntime, openvino")

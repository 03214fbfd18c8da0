"""Symmetric inference back ends: PyTorch, ONNX Runtime and OpenVINO behind one small interface.

Each back end maps a float32 batch (as the input contract prepares it) to float32 logits, and
to logits plus penultimate-layer embeddings in one pass. ``open_backend`` is the one way a
variant's file becomes a back end: for the build's own variants and for released ones alike.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tasks.errors import LeptonError
from tasks.host import usable_cpus

# The tensor names of every exported graph: one input, logits first, the embedding second.
INPUT_NAME = "images"
LOGITS_NAME = "logits"
EMBEDDING_NAME = "embedding"

RUNTIMES = ("torch", "onnxruntime", "openvino")


class Backend(Protocol):
    """What evaluation, parity checks, scoring and explanations need from a runtime."""

    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N x classes) for a float32 batch."""
        ...

    def embed(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and penultimate-layer embeddings (N x D) for a float32 batch, in one pass."""
        ...


# Inputs per call when a whole split is run: activations of a batch, not of the split, are held.
EVAL_BATCH = 256


def predict_batched(backend: Backend, inputs: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Logits of every input, ``batch_size`` at a time (``inputs`` may be a lazily prepared split)."""
    parts = [backend.predict(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


class NoEmbeddingOutput(LeptonError, ValueError):
    """A variant exported before embeddings were an output: it can be served but not monitored."""


class UnsafeArtifactError(LeptonError):
    """A weights file would execute code when loaded; it is refused, never loaded."""


class TorchBackend:
    """PyTorch eager execution of a module, on CPU, in inference mode."""

    name = "torch"

    def __init__(self, model: Any) -> None:  # a torch.nn.Module; torch is imported lazily
        self.model = model.eval()
        self._with_embedding = None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))).numpy()

    def embed(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from tasks.export.embedding import WithEmbedding

        if self._with_embedding is None:
            self._with_embedding = WithEmbedding(self.model).eval()
        with torch.inference_mode():
            logits, embedding = self._with_embedding(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))
        return logits.numpy(), embedding.numpy()


class OnnxRuntimeBackend:
    """ONNX Runtime CPU session over a ``.onnx`` file (external weights beside it are picked up)."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None, spin: bool = True) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            # Idle pool threads sleep instead of spinning: a server's event loop shares the cores with them.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.path = path

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names[:1], {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def embed(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if EMBEDDING_NAME not in self.output_names:
            raise NoEmbeddingOutput(f"{self.path} has outputs {self.output_names}, no {EMBEDDING_NAME!r}")
        logits, embedding = self.session.run(
            [self.output_names[0], EMBEDDING_NAME], {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}
        )
        return logits, embedding


class OpenVinoBackend:
    """OpenVINO CPU compiled model over an IR ``.xml`` (weights in the ``.bin`` beside it).

    The precision hint defaults to f32: on CPUs with bf16 support OpenVINO would
    otherwise infer in bf16 and lose accuracy that the FP32 variant must keep. The
    bf16 variant is opened with ``precision="bf16"``. With fewer ``threads`` than CPUs, its
    threads are not pinned to cores.
    """

    name = "openvino"

    def __init__(self, path: Path, precision: str = "f32", threads: int | None = None) -> None:
        import openvino as ov

        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
            if threads < usable_cpus():
                # OpenVINO pins its threads to the first cores: processes that each take a part of the CPUs
                # (scoring workers, Dask workers) would all run on the same ones, at half speed or worse; and
                # what the rest of the CPUs are left for (a server's event loop) should not be kept off them.
                config["ENABLE_CPU_PINNING"] = False
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.output = self.compiled.output(0)
        self.path = path

    def predict(self, batch: np.ndarray) -> np.ndarray:
        result = self.compiled(np.ascontiguousarray(batch, dtype=np.float32))
        return np.asarray(result[self.output])

    def embed(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embedding = next((o for o in self.compiled.outputs if EMBEDDING_NAME in o.get_names()), None)
        if embedding is None:
            raise NoEmbeddingOutput(f"{self.path} has no {EMBEDDING_NAME!r} output")
        result = self.compiled(np.ascontiguousarray(batch, dtype=np.float32))
        return np.asarray(result[self.output]), np.asarray(result[embedding])


def open_backend(
    runtime: str,
    path: Path,
    threads: int | None = None,
    torch_model: Callable[[], Any] | None = None,
    spin: bool = True,
    precision: str = "fp32",
) -> Backend:
    """Open a variant's file with the runtime that reads it.

    Args:
        runtime: ``onnxruntime``, ``openvino`` or ``torch``.
        path: the file the runtime opens (``.onnx``, IR ``.xml``, or a PyTorch state dict).
        threads: intra-op threads; None leaves the runtime's default.
        torch_model: for ``torch``, builds the architecture the state dict is loaded into.
        spin: whether ONNX Runtime's idle threads spin for the next call (lowest latency when nothing
            else needs the cores; a server turns it off).
        precision: the variant's precision; ``bf16`` makes OpenVINO compute in bf16, anything else in
            the precision the file holds (f32 for float graphs, INT8 where the graph is quantized).

    Raises:
        ValueError: an unknown runtime, ``torch`` without ``torch_model``, or bf16 outside OpenVINO.
        UnsafeArtifactError: a state dict that would need arbitrary objects unpickled.
    """
    if precision == "bf16" and runtime != "openvino":
        raise ValueError(f"a bf16 variant runs on openvino only, not {runtime!r}")
    if runtime == "onnxruntime":
        return OnnxRuntimeBackend(path, threads=threads, spin=spin)
    if runtime == "openvino":
        return OpenVinoBackend(path, precision="bf16" if precision == "bf16" else "f32", threads=threads)
    if runtime != "torch":
        raise ValueError(f"unknown runtime {runtime!r}; allowed: {', '.join(RUNTIMES)}")
    if torch_model is None:
        raise ValueError("a torch variant needs its architecture (torch_model) to load its state dict into")
    import torch

    try:
        # weights_only: tensors and plain containers, never code to run.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeArtifactError(
            f"{path} holds pickled objects other than tensors; refused without running them ({str(exc).splitlines()[0]})"
        ) from None
    model = torch_model()
    model.load_state_dict(state)
    return TorchBackend(model)

"""Export a torch classifier to ONNX with a dynamic batch axis, and check the graph."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
EMBEDDING_NAME = "embedding"


class WithEmbedding(nn.Module):
    """A classifier that also returns its penultimate activations (the input of its last Linear).

    Monitoring compares these embeddings between reference and production data;
    exporting them as a second output means the served artifact itself produces them.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        import copy

        linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__} has no Linear layer to take an embedding before")
        self.body = copy.deepcopy(model)
        parent_name, _, child = linears[-1].rpartition(".")
        parent = self.body.get_submodule(parent_name) if parent_name else self.body
        self.head = getattr(parent, child)
        setattr(parent, child, nn.Identity())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.body(x)
        return self.head(embedding), embedding

    def check_split(self, model: nn.Module, sample: torch.Tensor) -> None:
        """The split model must give the original logits: its last Linear was its last operation.

        Raises:
            ValueError: something runs after the last Linear, so it is no penultimate layer.
        """
        with torch.no_grad():
            expected = model.eval()(sample)
            logits, _ = self.eval()(sample)
        if not torch.allclose(expected, logits, atol=1e-5):
            raise ValueError(f"{type(model).__name__}: its last Linear is not its output layer; no embedding to export")


def export_onnx(model: nn.Module, sample: torch.Tensor, out_path: Path) -> Path:
    """Write ``model`` to ``out_path`` as ONNX with a dynamic batch axis; return the path.

    Outputs: ``logits`` first, then ``embedding`` (the input of the last Linear).

    The dynamo exporter may write weights to ``<name>.data`` beside the graph;
    callers treat the variant as its whole folder, so both travel together.

    Raises:
        onnx.checker.ValidationError: the exported graph is not valid ONNX.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=65_536)
    both = WithEmbedding(model)
    both.check_split(model, sample)
    torch.onnx.export(
        both.eval(),
        (sample,),
        str(out_path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME, EMBEDDING_NAME],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        optimize=True,
        verbose=False,
    )
    _strip_node_metadata(out_path)
    # Checking by path lets the checker follow external data files.
    onnx.checker.check_model(str(out_path), full_check=True)
    return out_path


def _strip_node_metadata(path: Path) -> None:
    """Drop the exporter's per-node debug metadata (Python stack traces with local paths).

    It leaks the build machine's file layout into a released artifact and makes
    the same model differ byte-wise between checkouts; inference never reads it.
    Weights in the external data file are left untouched.
    """
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))

"""Export a torch classifier to ONNX with a dynamic batch axis, and check the graph."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
from torch import nn

from tasks.export.backends import EMBEDDING_NAME, INPUT_NAME, LOGITS_NAME
from tasks.export.embedding import WithEmbedding


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
        output_names=[LOGITS_NAME, EMBEDDING_NAME],
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

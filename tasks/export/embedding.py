"""A classifier split at its last Linear layer: logits and the embedding (that layer's input) in one pass."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WithEmbedding(nn.Module):
    """A classifier that also returns its penultimate activations (the input of its last Linear).

    Monitoring compares these embeddings between reference and production data;
    exporting them as a second output means the served artifact itself produces them.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
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

"""Structured (channel) pruning with torch-pruning: whole channels go, so dense inference gets faster.

Unstructured magnitude pruning only zeroes weights; dense kernels run just as long. Removing
channels shrinks every tensor that touches them, which ONNX Runtime and OpenVINO do run faster.
"""

from __future__ import annotations

import copy

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class PruneConfig(BaseModel):
    """How much of the network's compute to remove."""

    model_config = ConfigDict(extra="forbid")

    keep_macs: float = Field(0.5, gt=0.05, lt=1.0, description="Fraction of the multiply-accumulates to keep")
    tolerance: float = Field(0.05, gt=0.0, le=0.2, description="Stop once MACs are within this of the target")
    steps: int = Field(20, ge=1, le=200, description="Pruning happens in this many small steps at most")


class PruneResult(BaseModel):
    """Compute and size before and after."""

    macs_before: int
    macs_after: int
    params_before: int
    params_after: int

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before


def count_macs_params(model: nn.Module, sample: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass on ``sample`` and the parameter count."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model.eval(), sample)
    return int(macs), int(params)


def prune_channels(model: nn.Module, sample: torch.Tensor, config: PruneConfig) -> tuple[nn.Module, PruneResult]:
    """A copy of ``model`` with whole channels removed (smallest L2 magnitude first) until MACs reach the target.

    The classifier's last Linear keeps its outputs (one per class). The copy still needs a
    short fine-tune to win back accuracy; it exports to ONNX/OpenVINO like the original.

    Raises:
        ValueError: the target cannot be reached (nothing left to prune).
    """
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    macs_before, params_before = count_macs_params(pruned, sample)
    last_linear = [m for m in pruned.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(
        pruned,
        sample,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.9,  # the most any layer may lose by the last step; we usually stop long before
        iterative_steps=config.steps,
        ignored_layers=[last_linear],
    )
    target = config.keep_macs * macs_before
    macs = macs_before
    for _ in range(config.steps):
        if macs <= target * (1 + config.tolerance):
            break
        pruner.step()
        macs, _ = count_macs_params(pruned, sample)
    if macs > target * (1 + config.tolerance):
        raise ValueError(
            f"pruning kept {macs / macs_before:.2f} of the MACs; the target {config.keep_macs:.2f} needs more steps "
            "or a network with more prunable channels"
        )
    macs_after, params_after = count_macs_params(pruned, sample)
    return pruned, PruneResult(
        macs_before=macs_before, macs_after=macs_after, params_before=params_before, params_after=params_after
    )

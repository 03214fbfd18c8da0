"""Structured (channel) pruning with torch-pruning: whole channels go, so dense inference gets faster.

Unstructured magnitude pruning only zeroes weights; dense kernels run just as long. Removing
channels shrinks every tensor that touches them, which ONNX Runtime and OpenVINO do run faster.
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import torch
from pydantic import BaseModel
from torch import nn

from tasks.compress.config import PruneConfig
from tasks.compress.distill import fit_against_teacher
from tasks.data.snapshot import DatasetSnapshot
from tasks.train.config import TrainConfig
from tasks.train.runs import FINISHED
from tasks.train.trained import TrainedModel
from tasks.train.models import count_macs_params


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
        round_to=config.round_to,
    )
    target = config.keep_macs * macs_before
    macs, params = macs_before, params_before
    for _ in range(config.steps):
        if macs <= target * (1 + config.tolerance):
            break
        pruner.step()
        macs, params = count_macs_params(pruned, sample)
    if macs > target * (1 + config.tolerance):
        raise ValueError(
            f"pruning kept {macs / macs_before:.2f} of the MACs; the target {config.keep_macs:.2f} needs more steps "
            "or a network with more prunable channels"
        )
    return pruned, PruneResult(macs_before=macs_before, macs_after=macs, params_before=params_before, params_after=params)


class PrunedModel(BaseModel):
    """A pruned and fine-tuned model on disk (as ONNX exports, made by the caller) and its numbers."""

    result: PruneResult
    val_acc: float
    test_acc: float
    epochs_run: int


def prune_and_finetune(
    source: TrainedModel,
    teacher: TrainedModel,
    snapshot: DatasetSnapshot,
    config: PruneConfig,
    train: TrainConfig,
    out_dir: Path,
    resume: Path | None = None,
) -> tuple[nn.Module, PrunedModel]:
    """Prune ``source`` to ``config.keep_macs`` of its MACs, then fine-tune it against ``teacher`` and the labels.

    The pruned architecture has no name in the zoo, so the module itself is
    returned for export; nothing pickles it. Pruning is deterministic, so a fine-tune interrupted
    in ``out_dir`` continues from ``resume`` (its last checkpoint) on the same architecture; the
    fine-tuned weights are kept as ``model_state.pt``, which marks the fine-tune finished.
    """
    raw, _ = snapshot.arrays("train")
    sample = torch.from_numpy(snapshot.input.to_model_input(raw[:2]))
    pruned, result = prune_channels(source.load(), sample, config)
    if config.finetune_epochs == 0:
        return pruned.eval(), PrunedModel(result=result, val_acc=float("nan"), test_acc=float("nan"), epochs_run=0)
    L.seed_everything(train.seed, workers=True, verbose=False)
    outcome = fit_against_teacher(
        pruned, teacher, snapshot, train, config.temperature, config.teacher_alpha,
        config.finetune_epochs, config.finetune_learning_rate, out_dir, resume,
    )
    torch.save(pruned.state_dict(), out_dir / FINISHED)
    return pruned.eval(), PrunedModel(
        result=result, val_acc=outcome.val_acc, test_acc=outcome.test_acc, epochs_run=len(outcome.history)
    )

"""Knowledge distillation: a smaller student learns the trained teacher's soft targets and the labels."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from tasks.compress.config import DistillConfig
from tasks.data.snapshot import DatasetSnapshot
from tasks.train.config import TrainConfig
from tasks.train.fit import FitOutcome, fit_module, trained_model
from tasks.train.models import build_model, resolve_model
from tasks.train.module import ClassifierModule
from tasks.train.trained import TrainedModel


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton et al.'s loss: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)``.

    The ``T^2`` keeps the soft-target gradients on the same scale as the hard-label
    ones whatever the temperature, so ``alpha`` means the same at every ``T``.
    """
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=1),
        F.log_softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * temperature**2 * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


class DistillationModule(ClassifierModule):
    """Trains ``model`` (the student) against a frozen teacher's soft targets plus the hard labels.

    Validation and test report plain cross-entropy (see ``ClassifierModule``).
    """

    def __init__(
        self,
        model: nn.Module,
        teacher: nn.Module,
        temperature: float,
        alpha: float,
        learning_rate: float,
        weight_decay: float,
        max_epochs: int,
    ) -> None:
        super().__init__(model, learning_rate, weight_decay, max_epochs)
        self.temperature = temperature
        self.alpha = alpha
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> DistillationModule:
        # Lightning switches the whole module to train mode each epoch; the teacher's
        # batch-norm statistics and dropout must stay as they were when it was tested.
        super().train(mode)
        self.teacher.eval()
        return self

    def training_loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return distillation_loss(logits, teacher_logits, y, self.temperature, self.alpha)


# The training settings a fit against a teacher does not use: it continues only from its own checkpoint.
IGNORED_TRAIN_SETTINGS = ("resume_from", "weights_path")


def teacher_fit_settings(train: TrainConfig) -> dict:
    """The training settings a distillation or fine-tune depends on (what names its folder), as JSON data."""
    return train.model_dump(mode="json", exclude=set(IGNORED_TRAIN_SETTINGS))


def fit_against_teacher(
    student: nn.Module,
    teacher: TrainedModel,
    snapshot: DatasetSnapshot,
    train: TrainConfig,
    temperature: float,
    alpha: float,
    max_epochs: int,
    learning_rate: float,
    out_dir: Path,
    resume: Path | None = None,
) -> FitOutcome:
    """Train ``student`` in place against ``teacher``'s soft targets and the labels; it ends with its best weights.

    ``train`` supplies everything but epochs and learning rate (batch size, seed,
    weight decay, Lightning devices/strategy); its ``resume_from`` and ``weights_path`` are not used:
    a fit continues only from ``resume``, the last checkpoint an interrupted fit of the same inputs
    left in ``out_dir``. Distillation and the fine-tune after pruning both run through here.
    """
    settings = train.model_copy(
        update={"max_epochs": max_epochs, "learning_rate": learning_rate, **dict.fromkeys(IGNORED_TRAIN_SETTINGS)}
    )
    module = DistillationModule(
        student, teacher.load(), temperature, alpha, settings.learning_rate, settings.weight_decay, settings.max_epochs
    )
    return fit_module(module, snapshot, settings, out_dir, resume=resume)


def distill(
    teacher: TrainedModel,
    snapshot: DatasetSnapshot,
    config: DistillConfig,
    train: TrainConfig,
    out_dir: Path,
    resume: Path | None = None,
) -> TrainedModel:
    """Train ``config.student`` from scratch against ``teacher`` on the snapshot's train split
    (or on from ``resume``, the last checkpoint of an interrupted distillation in ``out_dir``).

    Returns:
        The student as a ``TrainedModel``: rebuildable by its zoo name, tested on the test split.
    """
    # Seeded before the student is built, so its initial weights are the same run after run.
    L.seed_everything(train.seed, workers=True, verbose=False)
    name = resolve_model(config.student, snapshot.input, student=True)
    student = build_model(name, len(snapshot.classes), snapshot.input)
    outcome = fit_against_teacher(
        student, teacher, snapshot, train, config.temperature, config.alpha, config.max_epochs, config.learning_rate, out_dir,
        resume,
    )
    return trained_model(student, name, snapshot, outcome, out_dir)

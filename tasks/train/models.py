"""The model zoo: for images a small CNN default, a tiny one (a distillation student), two torchvision
architectures; for tables an MLP and a smaller one (its student). All random-initialised.

Every entry takes one modality's inputs, sized by the input contract (images: its channels;
tables: its number of model inputs). ``auto`` names each modality's default (or default student).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

from tasks.data.contract import InputContract
from tasks.errors import LeptonError


class ModelBuildError(LeptonError, ValueError):
    """A model the zoo cannot build as asked: an unknown name, another modality, or weights that do not fit."""


class SmallCNN(nn.Module):
    """Two conv blocks and a linear head; enough for digits, fast on a laptop CPU."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, width * 2, 3, padding=1),
            nn.BatchNorm2d(width * 2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(width * 2 * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TabularMLP(nn.Module):
    """Two hidden layers (Linear, BatchNorm, ReLU, Dropout) and a linear head, over a table's model inputs.

    The embedding monitoring compares is the input of the head: the second hidden layer's output.
    """

    def __init__(self, num_classes: int, in_features: int, width: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Linear(in_features, width),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(width, width // 2),
            nn.BatchNorm1d(width // 2),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(width // 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _first_conv_for(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same first convolution, taking ``in_channels`` inputs."""
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )


def _small_cnn(num_classes: int, contract: InputContract) -> nn.Module:
    return SmallCNN(num_classes, contract.channels)


def _tiny_cnn(num_classes: int, contract: InputContract) -> nn.Module:
    # A quarter of small_cnn's parameters: a student to distil small_cnn (or bigger) into.
    return SmallCNN(num_classes, contract.channels, width=16)


def _resnet18(num_classes: int, contract: InputContract) -> nn.Module:
    model = tv_models.resnet18(weights=None, num_classes=num_classes)
    if contract.channels != 3:
        model.conv1 = _first_conv_for(model.conv1, contract.channels)
    return model


def _mobilenet_v3_small(num_classes: int, contract: InputContract) -> nn.Module:
    model = tv_models.mobilenet_v3_small(weights=None, num_classes=num_classes)
    if contract.channels != 3:
        model.features[0][0] = _first_conv_for(model.features[0][0], contract.channels)
    # torchvision's BN momentum of 0.01 suits long ImageNet schedules; from scratch on a
    # small dataset the running statistics lag the weights and eval accuracy sits at chance.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model


def _tabular_mlp(num_classes: int, contract: InputContract) -> nn.Module:
    return TabularMLP(num_classes, contract.shape[0])


def _tabular_mlp_small(num_classes: int, contract: InputContract) -> nn.Module:
    # A sixth of tabular_mlp's hidden multiply-accumulates: a student to distil it into.
    return TabularMLP(num_classes, contract.shape[0], width=32)


# name -> (the input kind it takes, builder)
ZOO: dict[str, tuple[str, Callable[[int, InputContract], nn.Module]]] = {
    "small_cnn": ("image", _small_cnn),
    "tiny_cnn": ("image", _tiny_cnn),
    "resnet18": ("image", _resnet18),
    "mobilenet_v3_small": ("image", _mobilenet_v3_small),
    "tabular_mlp": ("tabular", _tabular_mlp),
    "tabular_mlp_small": ("tabular", _tabular_mlp_small),
}
AUTO = "auto"
# kind -> (the model "auto" trains, the student "auto" distils into)
DEFAULTS: dict[str, tuple[str, str]] = {"image": ("small_cnn", "tiny_cnn"), "tabular": ("tabular_mlp", "tabular_mlp_small")}


def resolve_model(name: str, contract: InputContract, student: bool = False) -> str:
    """The zoo name ``name`` stands for: itself, or for ``auto`` the default (or default student) of the contract's kind."""
    return DEFAULTS[contract.kind][int(student)] if name == AUTO else name


def build_model(name: str, num_classes: int, contract: InputContract, weights_path: Path | None = None) -> nn.Module:
    """Build a classifier by name with ``num_classes`` outputs for inputs of ``contract``.

    Args:
        name: a key of ``ZOO``, or ``auto`` (the default model of the contract's kind).
        num_classes: size of the output layer.
        contract: the inputs it takes (images: their channel count).
        weights_path: optional local state_dict, loaded with ``weights_only=True``.

    Raises:
        ModelBuildError: an unknown name, a model of another modality, or weights that are missing or do not fit.
    """
    name = resolve_model(name, contract)
    if name not in ZOO:
        raise ModelBuildError(f"unknown model {name!r}; allowed: {', '.join(ZOO)}, {AUTO}")
    kind, build = ZOO[name]
    if kind != contract.kind:
        fits = [n for n, (k, _) in ZOO.items() if k == contract.kind]
        raise ModelBuildError(
            f"model {name!r} takes {kind} inputs; this data is {contract.kind}: use {AUTO} or one of {', '.join(fits)}"
        )
    model = build(num_classes, contract)
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise ModelBuildError(f"weights {weights_path} do not exist (train.weights_path)")
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelBuildError(f"weights {weights_path} do not fit {name} with {num_classes} classes: {exc}") from None
    return model


def count_macs_params(model: nn.Module, sample: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass on ``sample`` and the parameter count."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model.eval(), sample)
    return int(macs), int(params)

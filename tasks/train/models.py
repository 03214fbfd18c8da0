"""The model zoo: a small CNN default, a tiny one (a distillation student), two torchvision architectures; all random-initialised."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tv_models

MODEL_NAMES = ("small_cnn", "tiny_cnn", "resnet18", "mobilenet_v3_small")


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


def build_model(name: str, num_classes: int, in_channels: int, weights_path: Path | None = None) -> nn.Module:
    """Build a classifier by name with ``num_classes`` outputs and ``in_channels`` inputs.

    Args:
        name: one of ``MODEL_NAMES``.
        num_classes: size of the output layer.
        in_channels: 1 for grayscale, 3 for RGB.
        weights_path: optional local state_dict, loaded with ``weights_only=True``.

    Raises:
        ValueError: an unknown name, or weights that do not fit the architecture.
    """
    if name == "small_cnn":
        model: nn.Module = SmallCNN(num_classes, in_channels)
    elif name == "tiny_cnn":
        # A quarter of small_cnn's parameters: a student to distil small_cnn (or bigger) into.
        model = SmallCNN(num_classes, in_channels, width=16)
    elif name == "resnet18":
        model = tv_models.resnet18(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.conv1 = _first_conv_for(model.conv1, in_channels)
    elif name == "mobilenet_v3_small":
        model = tv_models.mobilenet_v3_small(weights=None, num_classes=num_classes)
        if in_channels != 3:
            model.features[0][0] = _first_conv_for(model.features[0][0], in_channels)
        # torchvision's BN momentum of 0.01 suits long ImageNet schedules; from scratch on a
        # small dataset the running statistics lag the weights and eval accuracy sits at chance.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
    else:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}")
    if weights_path is not None:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"weights {weights_path} do not fit {name} with {num_classes} classes: {exc}") from None
    return model


def count_macs_params(model: nn.Module, sample: torch.Tensor) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass on ``sample`` and the parameter count."""
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model.eval(), sample)
    return int(macs), int(params)

"""The model zoo builds each architecture for any class count and channel count."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import torch

from tasks.data.contract import ImageInput
from tasks.train.config import ModelName
from tasks.train.models import ZOO, build_model

GREY = ImageInput(channels=1, image_size=16)


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_model_maps_images_to_class_logits(name: str, channels: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, contract=ImageInput(channels=channels, image_size=32)).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, 32, 32))
    assert out.shape == (2, 7)


def test_unknown_model_lists_the_allowed_names() -> None:
    with pytest.raises(ValueError, match="small_cnn, tiny_cnn, resnet18, mobilenet_v3_small"):
        build_model("vgg16", 10, GREY)


def test_local_weights_are_loaded(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_model("small_cnn", 4, GREY)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = build_model("small_cnn", 4, GREY, weights_path=tmp_path / "w.pt")
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_weights_of_another_shape_are_refused_clearly(tmp_path: Path) -> None:
    torch.save(build_model("small_cnn", 4, GREY).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="do not fit small_cnn with 10 classes"):
        build_model("small_cnn", 10, GREY, weights_path=tmp_path / "w.pt")


def test_the_zoo_and_the_config_name_the_same_models() -> None:
    assert set(ZOO) == set(get_args(ModelName))

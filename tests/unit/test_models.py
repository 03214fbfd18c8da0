"""The model zoo builds each architecture for any class count and channel count."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest
import torch

from tasks.data.contract import ImageInput
from tasks.train.config import ModelName
from tasks.data.table_schema import TabularColumn, TabularInput
from tasks.train.models import ZOO, build_model, resolve_model

GREY = ImageInput(channels=1, image_size=16)


@pytest.mark.parametrize("name", [name for name, (kind, _) in ZOO.items() if kind == "image"])
@pytest.mark.parametrize("channels", [1, 3])
def test_each_image_model_maps_images_to_class_logits(name: str, channels: int) -> None:
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


@pytest.mark.parametrize("name", [name for name, (kind, _) in ZOO.items() if kind == "tabular"])
def test_each_table_model_maps_rows_to_class_logits(name: str) -> None:
    torch.manual_seed(0)
    schema = TabularInput(
        columns=[TabularColumn(name="x", type="numeric"), TabularColumn(name="c", type="categorical", categories=["a", "b", "c"])],
        label_column="y",
    )
    model = build_model(name, num_classes=3, contract=schema).eval()
    with torch.no_grad():
        assert model(torch.rand(5, schema.shape[0])).shape == (5, 3)
    with pytest.raises(ValueError, match="takes tabular inputs; this data is image: use auto or one of small_cnn"):
        build_model(name, 3, GREY)


def test_auto_builds_each_kinds_default() -> None:
    schema = TabularInput(columns=[TabularColumn(name="x", type="numeric")], label_column="y")
    assert resolve_model("auto", schema) == "tabular_mlp" and resolve_model("auto", schema, student=True) == "tabular_mlp_small"
    assert resolve_model("auto", GREY) == "small_cnn" and resolve_model("auto", GREY, student=True) == "tiny_cnn"
    assert resolve_model("resnet18", GREY) == "resnet18"


def test_the_zoo_and_the_config_name_the_same_models() -> None:
    assert set(ZOO) | {"auto"} == set(get_args(ModelName))

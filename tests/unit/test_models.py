"""The model zoo builds each architecture for any class count and channel count."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tasks.train.models import MODEL_NAMES, build_model


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_each_model_maps_images_to_class_logits(name: str, channels: int) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=channels).eval()
    with torch.no_grad():
        out = model(torch.rand(2, channels, 32, 32))
    assert out.shape == (2, 7)


def test_unknown_model_lists_the_allowed_names() -> None:
    with pytest.raises(ValueError, match="small_cnn, tiny_cnn, resnet18, mobilenet_v3_small"):
        build_model("vgg16", 10, 1)


def test_local_weights_are_loaded(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = build_model("small_cnn", 4, 1)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = build_model("small_cnn", 4, 1, weights_path=tmp_path / "w.pt")
    for a, b in zip(source.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_weights_of_another_shape_are_refused_clearly(tmp_path: Path) -> None:
    torch.save(build_model("small_cnn", 4, 1).state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match="do not fit small_cnn with 10 classes"):
        build_model("small_cnn", 10, 1, weights_path=tmp_path / "w.pt")

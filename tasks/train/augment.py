"""Training-time augmentation of image batches: random affine (rotate, shear, zoom, shift), flips, colour.

Each image of a batch gets its own random draw (Kornia's augmentation modules, which batch what
torchvision's transforms do one image at a time), from PyTorch's generator that the training seed
sets: the same seed trains the same model.
"""

from __future__ import annotations

from pydantic import Field

from tasks.forms import FormModel


class AugmentConfig(FormModel):
    """Random changes to each training image, drawn per image and per step.

    Applied to training batches only: validation, test, export and serving see the images as they are.
    Images only; a table's rows are never augmented. Every change is off at 0 (the default); flips stay
    off unless asked for, because they change what some images mean (a mirrored 2 is no 2).
    """

    rotate_degrees: float = Field(0.0, ge=0.0, le=180.0, description="Rotate by an angle drawn from ±this many degrees")
    shear_degrees: float = Field(0.0, ge=0.0, le=45.0, description="Shear by an angle drawn from ±this many degrees")
    zoom: float = Field(0.0, ge=0.0, lt=1.0, description="Scale by a factor drawn from 1 ± zoom")
    shift: float = Field(0.0, ge=0.0, le=0.5, description="Shift by up to this share of the width and height")
    horizontal_flip: bool = Field(False, description="Mirror left-right half of the images (not for digits or text)")
    vertical_flip: bool = Field(False, description="Mirror top-bottom half of the images")
    brightness: float = Field(0.0, ge=0.0, le=1.0, description="Multiply brightness by a factor drawn from 1 ± this")
    contrast: float = Field(0.0, ge=0.0, le=1.0, description="Multiply contrast by a factor drawn from 1 ± this")

    @property
    def active(self) -> bool:
        """Whether any change is switched on."""
        return any(
            (self.rotate_degrees, self.shear_degrees, self.zoom, self.shift, self.horizontal_flip, self.vertical_flip,
             self.brightness, self.contrast)
        )


def build_augmentation(config: AugmentConfig):  # noqa: ANN201 - a torch module; torch and kornia are imported lazily
    """The module that augments a float N x C x H x W batch in [0, 1] (None when nothing is switched on)."""
    if not config.active:
        return None
    import kornia.augmentation as K
    import torch

    steps: list[torch.nn.Module] = []
    if config.rotate_degrees or config.shear_degrees or config.zoom or config.shift:
        steps.append(
            K.RandomAffine(
                degrees=config.rotate_degrees,
                translate=(config.shift, config.shift) if config.shift else None,
                scale=(1.0 - config.zoom, 1.0 + config.zoom) if config.zoom else None,
                shear=config.shear_degrees or None,
                padding_mode="border",  # background stays background rather than a black frame
                p=1.0,
            )
        )
    if config.horizontal_flip:
        steps.append(K.RandomHorizontalFlip(p=0.5))
    if config.vertical_flip:
        steps.append(K.RandomVerticalFlip(p=0.5))
    if config.brightness or config.contrast:
        steps.append(K.ColorJitter(brightness=config.brightness, contrast=config.contrast, p=1.0))
    return torch.nn.Sequential(*steps)

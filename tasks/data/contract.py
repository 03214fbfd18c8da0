"""The input contract: how a raw input becomes the model's input, stored in every release.

A modality (images today) is its contract class: it decodes raw inputs exactly as training
did, scales them for the model, and summarises them for monitoring. Training, the release's
monitoring reference, scoring, serving and explanations all go through it, and the release
manifest carries it, so an independent client can prepare inputs from the manifest alone.

Two modalities: images (``ImageInput``) and tables (``TabularInput``); ``InputContract`` is
their union, discriminated by ``kind``. Each has one module per stage where it differs: its
source reader in ``tasks/data/``, its models in the zoo, its explainer in ``tasks/explain/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.data.images import STATISTIC_COLUMNS, BadImage, decode_image, image_statistics
from tasks.data.decoded import DecodedInputs
from tasks.data.table_schema import TabularInput

if TYPE_CHECKING:
    import pandas as pd


class ImageInput(BaseModel):
    """How an image file becomes the model's input tensor.

    Decode fully; convert to L (``channels`` 1, ITU-R 601-2 luma) or RGB, with a palette
    expanded, transparency composited onto black, 16-bit images scaled to 8 bits (32-bit and
    float images by their maximum); resize to
    ``image_size`` x ``image_size`` with bilinear resampling (the aspect ratio is not kept);
    lay out as N x C x H x W float32 and divide by 255.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["image"] = "image"
    channels: Literal[1, 3] = Field(description="1 (grayscale, L) or 3 (RGB)")
    image_size: int = Field(ge=1, le=65_536, description="Inputs are image_size x image_size pixels")
    colour: Literal["L", "RGB"] = Field(description="PIL mode every image is converted to: L for 1 channel, RGB for 3")
    transparency: Literal["composite-on-black"] = "composite-on-black"
    resize: Literal["bilinear"] = "bilinear"
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    scale: Literal["pixel / 255"] = "pixel / 255"

    @model_validator(mode="before")
    @classmethod
    def _colour(cls, data: Any) -> Any:
        if isinstance(data, dict) and "colour" not in data and data.get("channels") in (1, 3):
            data = {**data, "colour": "L" if data["channels"] == 1 else "RGB"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ImageInput:
        if self.colour != ("L" if self.channels == 1 else "RGB"):
            raise ValueError(f"colour {self.colour} does not fit channels={self.channels} (1: L, 3: RGB)")
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        """One input's shape: channels x height x width."""
        return (self.channels, self.image_size, self.image_size)

    @property
    def folder_name(self) -> str:
        """The snapshot folder of one dataset version decoded by this contract."""
        return "x".join(str(n) for n in self.shape)

    @property
    def statistic_columns(self) -> list[str]:
        """The numerical per-input statistics monitoring compares (from :meth:`statistics`)."""
        return list(STATISTIC_COLUMNS)

    @property
    def categorical_statistics(self) -> list[str]:
        """The categorical per-input statistics monitoring compares: none for images."""
        return []

    @property
    def optional_statistics(self) -> list[str]:
        """Statistics an input sent as a tensor (already resized) cannot carry: its size on disk. NaN in its row."""
        return ["original_width", "original_height", "aspect"]

    def describe(self) -> str:
        """One line for people: the model card and logs."""
        return (
            f"{self.channels} channel(s) ({self.colour}), {self.image_size}x{self.image_size} pixels "
            f"({self.resize} resize), {self.layout} {self.dtype}, scaled as {self.scale}"
        )

    def decode(self, source: Path | bytes, max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """One file's (or its bytes') uint8 C x H x W pixels and its (width, height) before resizing.

        Raises:
            BadImage: the file is not a usable image (or has more than ``max_pixels``); ``reason`` says why.
        """
        return decode_image(source, self.image_size, self.channels, max_pixels)

    def read(self, sources: Sequence[Path | bytes], max_pixels: int | None = None) -> DecodedInputs:
        """Decode every file (or file's bytes); an unusable one is a failure with its reason, never an exception."""
        import pandas as pd

        pixels, sizes, source, failures = [], [], [], []
        for index, path in enumerate(sources):
            try:
                image, size = self.decode(path, max_pixels)
            except BadImage as bad:
                failures.append((index, bad.reason))
                continue
            pixels.append(image)
            sizes.append(size)
            source.append(index)
        raw = np.stack(pixels) if pixels else np.zeros((0, *self.shape), np.uint8)
        meta = pd.DataFrame(np.asarray(sizes, dtype=np.int64).reshape(-1, 2), columns=["original_width", "original_height"])
        return DecodedInputs(raw=raw, meta=meta, source=source, failures=failures)

    def incomparable(self, other: object) -> str | None:
        """Why a model of this contract cannot be measured on inputs of ``other`` (None: it can, unchanged)."""
        if other == self:
            return None
        shown = f"{list(other.shape)} ({other.describe()})" if hasattr(other, "describe") else repr(other)
        return f"it takes inputs {list(self.shape)} ({self.describe()}), the other data is {shown}"

    def adopt(self, other: ImageInput, raw: np.ndarray) -> np.ndarray:
        """Raw inputs of an equal contract: unchanged (see :meth:`incomparable`)."""
        return raw

    def to_model_input(self, raw: np.ndarray) -> np.ndarray:
        """uint8 pixels -> the float32 tensor every exported variant takes."""
        return raw.astype(np.float32) / 255.0

    def from_model_input(self, tensor: np.ndarray) -> np.ndarray:
        """The pixels a model input was scaled from (a tensor sent as is): the inverse of :meth:`to_model_input`."""
        return np.clip(np.rint(tensor * 255.0), 0, 255).astype(np.uint8)

    def statistics(self, raw: np.ndarray, meta: pd.DataFrame) -> pd.DataFrame:
        """Per-input statistics for monitoring (columns :attr:`statistic_columns`)."""
        return image_statistics(raw, meta[["original_width", "original_height"]].to_numpy())

    def unfamiliar(self, rows: pd.DataFrame, reference: pd.DataFrame) -> tuple[int, str]:
        """How many monitoring ``rows`` look like no reference row, and what people should know about them.

        For images: sizes on disk never seen in the training data (they are resized as in training).
        """
        sizes = ["original_width", "original_height"]
        known = set(reference[sizes].itertuples(index=False, name=None))
        unseen = sum(size not in known for size in rows[sizes].itertuples(index=False, name=None))
        note = (
            f"{unseen} images have a size never seen in training data (sizes there: {sorted(known)[:5]}); "
            "they were resized as in training"
        )
        return unseen, note


# Every modality's contract, told apart by ``kind``.
InputContract = Annotated[ImageInput | TabularInput, Field(discriminator="kind")]

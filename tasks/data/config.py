"""Configuration of ingestion, validation and splitting."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from tasks.forms import FormModel

EMBEDDED_DIGITS = "embedded://digits"


class DataConfig(FormModel):
    """Where the images come from and how they are normalised and split.

    ``source`` is an ImageFolder directory (one subfolder per class) or
    ``embedded://digits``: scikit-learn's bundled handwritten digits, written
    as PNG files into ``work_dir/datasets/digits`` on first use and ingested
    through the same path as any other folder.
    """

    source: str = Field(EMBEDDED_DIGITS, description="ImageFolder directory, or embedded://digits")
    image_size: int = Field(16, ge=8, le=1024, description="Images are resized to image_size x image_size pixels")
    channels: int = Field(1, description="1 (grayscale) or 3 (RGB)")
    min_images_per_class: int = Field(5, ge=1, description="A class with fewer valid images fails the run")
    val_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="Share of the images kept for validation (early stopping, calibration)")
    test_fraction: float = Field(0.15, gt=0.0, lt=0.5, description="Share of the images kept for the test: accuracy, the gate, the reference")
    split_salt: str = Field("lepton", min_length=1, description="Change it to draw a different (still stable) split")
    max_quarantine_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Fail when more than this share of files is quarantined"
    )

    @field_validator("channels")
    @classmethod
    def _channels(cls, value: int) -> int:
        if value not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {value}")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value != EMBEDDED_DIGITS and "://" in value and not value.startswith("file://"):
            raise ValueError(f"source must be a local folder, file:// path or {EMBEDDED_DIGITS}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _fractions(self) -> "DataConfig":
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError(
                "val_fraction + test_fraction must be below 0.8 so training keeps data, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        return self

    def source_path(self) -> Path | None:
        """The local folder of a folder source; None for the embedded dataset."""
        if self.source == EMBEDDED_DIGITS:
            return None
        return Path(self.source.removeprefix("file://")).expanduser()

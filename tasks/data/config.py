"""Configuration of ingestion, validation and splitting."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tasks.forms import FormModel

EMBEDDED_DIGITS = "embedded://digits"
# scikit-learn's bundled tables, written as CSV (label column ``label``) on first use.
EMBEDDED_TABLES = ("embedded://breast_cancer", "embedded://wine")
EMBEDDED = (EMBEDDED_DIGITS, *EMBEDDED_TABLES)


class DataConfig(FormModel):
    """Where the data comes from, how it is read, validated and split.

    ``source`` is an ImageFolder directory (one subfolder per class), a table (a CSV, TSV or
    Parquet file, or a folder of them, with a label column), either of them under an
    ``s3://bucket/prefix`` (downloaded into ``work_dir/datasets/s3`` with a cache by ETag), or an
    embedded dataset:
    ``embedded://digits`` (scikit-learn's handwritten digits, written as PNG files into
    ``work_dir/datasets/digits`` on first use) or ``embedded://breast_cancer`` /
    ``embedded://wine`` (scikit-learn's tables, written as CSV with a ``label`` column). Each is
    ingested through the same path as any other source of its kind.
    """

    source: str = Field(
        EMBEDDED_DIGITS,
        description="ImageFolder directory, CSV/Parquet file or folder of them, s3://bucket/prefix of either, or "
        "embedded://digits, embedded://breast_cancer, embedded://wine",
    )
    endpoint_url: str | None = Field(
        None, description="s3:// sources: an S3-compatible endpoint (empty: AWS, or AWS_ENDPOINT_URL); credentials from the AWS chain"
    )
    kind: Literal["auto", "image", "tabular"] = Field(
        "auto", description="image, tabular, or auto: tabular for a table file or a folder holding only table files"
    )
    label_column: str = Field("label", min_length=1, description="Tables: the column holding each row's class")
    id_column: str | None = Field(
        None, description="Tables: a column identifying rows (not a feature); rows are split by it and it must be unique"
    )
    columns: dict[str, Literal["numeric", "categorical", "boolean", "ignore"]] = Field(
        {}, description="Tables: a column's type where inference should not decide (ignore: not a feature)"
    )
    max_categories: int = Field(
        50, ge=2, le=10_000, description="Tables: the most frequent categories kept per categorical column"
    )
    image_size: int = Field(16, ge=8, le=1024, description="Images are resized to image_size x image_size pixels")
    channels: int = Field(1, description="1 (grayscale) or 3 (RGB)")
    workers: int = Field(
        0, ge=0, le=256,
        description="Images: processes decoding files in parallel; 0: one per usable CPU from 2,000 files on, else one",
    )
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
        if value not in EMBEDDED and "://" in value and not value.startswith(("file://", "s3://")):
            raise ValueError(
                f"source must be a local folder or file, a file:// path, s3://bucket/prefix or one of {', '.join(EMBEDDED)}, "
                f"got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _fractions(self) -> "DataConfig":
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError(
                "val_fraction + test_fraction must be below 0.8 so training keeps data, "
                f"got {self.val_fraction} + {self.test_fraction}"
            )
        return self

    @model_validator(mode="after")
    def _roles(self) -> "DataConfig":
        if self.id_column is not None and self.id_column == self.label_column:
            raise ValueError(f"id_column and label_column are both {self.id_column!r}; they must be two columns")
        for name in {self.label_column, self.id_column} & set(self.columns):
            raise ValueError(f"columns.{name}: {name!r} is the label or id column, not a feature; remove it from columns")
        return self

    def source_path(self) -> Path | None:
        """The local path of a folder or file source; None for an embedded dataset or an s3:// prefix."""
        if self.source in EMBEDDED or self.source.startswith("s3://"):
            return None
        return Path(self.source.removeprefix("file://")).expanduser()

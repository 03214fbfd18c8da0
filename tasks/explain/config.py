"""Configuration of explanations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.forms import FormModel

Segmentation = Literal["auto", "grid", "slic", "quickshift"]


class LimeConfig(FormModel):
    """How LIME perturbs and fits; defaults suit small images and run in seconds per image."""

    num_samples: int = Field(1000, ge=50, le=50_000, description="Perturbed copies per image")
    top_labels: int = Field(3, ge=1, le=20, description="Classes explained per image (highest probability first)")
    segmentation: Segmentation = Field(
        "auto", description="auto: a square grid up to 64 px, SLIC superpixels above; or force one"
    )
    grid_cells: int = Field(8, ge=2, le=64, description="Grid: cells per side")
    slic_segments: int = Field(50, ge=4, le=1000, description="SLIC: about this many superpixels")
    batch_size: int = Field(1000, ge=1, le=50_000, description="Perturbed images per model call")
    hide: Literal["image-mean", "black", "segment-mean"] = Field(
        "image-mean",
        description="What a switched-off superpixel becomes. lime's default (segment-mean) leaves a uniform bright "
        "region as bright as before, hiding nothing; the image's mean colour removes local evidence",
    )
    seed: int = Field(0, description="Seed of LIME's perturbations: the same images, the same explanations")

"""Score the current production release on a candidate's test split, for the gate."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks.export.backends import Backend, TorchBackend, load_backend
from tasks.export.evaluate import accuracy
from tasks.registry.aliases import read_alias
from tasks.registry.release import download_release, read_manifest
from tasks.registry.store import ArtifactStore


class UnsafeArtifactError(RuntimeError):
    """A released file would execute code when loaded; it is refused, never loaded."""

    permanent = True  # no retry fixes it


class ProductionScore(BaseModel):
    """Production's accuracy on the candidate's test split, or why it could not be measured."""

    version: str | None = None
    accuracy: float | None = None
    comparable: bool = True
    note: str = ""


def score_production(
    store: ArtifactStore,
    model: str,
    inputs: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    work_dir: Path,
) -> ProductionScore:
    """Download production's served variant (sha256 verified) and measure it on ``inputs``.

    Production is incomparable when it was trained on other classes or takes
    another input shape; the gate then decides by its own setting.
    """
    alias, _ = read_alias(store, model)
    if alias is None:
        return ProductionScore(note="no production release yet")
    manifest = read_manifest(store, model, alias.version)
    expected_shape = [manifest["input"]["channels"], manifest["input"]["image_size"], manifest["input"]["image_size"]]
    if manifest["dataset"]["classes"] != classes:
        return ProductionScore(
            version=alias.version,
            comparable=False,
            note=f"production classes {manifest['dataset']['classes']} differ from the candidate's {classes}",
        )
    if list(inputs.shape[1:]) != expected_shape:
        return ProductionScore(
            version=alias.version,
            comparable=False,
            note=f"production takes inputs {expected_shape}, the candidate's test split is {list(inputs.shape[1:])}",
        )
    served = manifest["served"]
    dest = work_dir / "production" / model / alias.version
    download_release(store, model, alias.version, dest, work_dir / "cache", only=served["name"], manifest=manifest)
    backend = open_variant(manifest, dest, served["name"])
    return ProductionScore(version=alias.version, accuracy=accuracy(backend, inputs, labels))



def open_variant(manifest: dict, release_dir: Path, name: str, threads: int | None = None) -> Backend:
    """A back end for variant ``name`` of a release downloaded (verified) into ``release_dir``.

    Raises:
        ValueError: the release has no variant of that name.
        UnsafeArtifactError: a PyTorch state dict that would need arbitrary objects unpickled.
    """
    runtimes = {row["variant"]: row["runtime"] for row in manifest["variants"]}
    if name not in runtimes:
        raise ValueError(f"release {manifest['version']} has no variant {name!r}; it has {sorted(runtimes)}")
    path = release_dir / name / manifest["entrypoints"][name]
    if runtimes[name] != "torch":
        return load_backend(runtimes[name], path, threads)
    import torch

    from tasks.train.models import build_model

    model = build_model(manifest["training"]["model"], len(manifest["dataset"]["classes"]), manifest["input"]["channels"])
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeArtifactError(
            f"{path} holds pickled objects other than tensors; refused without running them ({str(exc).splitlines()[0]})"
        ) from None
    model.load_state_dict(state)
    return TorchBackend(model)

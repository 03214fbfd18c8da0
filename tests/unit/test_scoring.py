"""Scoring files with a variant: predictions for every readable file, monitoring rows when the release has a reference."""

from __future__ import annotations

import hashlib
import os
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks.data.contract import ImageInput
from tasks.export.backends import NoEmbeddingOutput, OnnxRuntimeBackend
from tasks.score.features import fit_projection
from tasks.data.workers import PARALLEL_FROM_FILES
from tasks.score.inputs import local_inputs
from tasks.score.scoring import score_files
from tasks.train.models import build_model

GREY = ImageInput(channels=1, image_size=16)


@pytest.fixture
def logits_only(tmp_path: Path) -> Path:
    """An ONNX model as exported before monitoring existed: one output, the logits."""
    torch.manual_seed(0)
    path = tmp_path / "old" / "model.onnx"
    path.parent.mkdir()
    torch.onnx.export(
        build_model("small_cnn", 3, GREY).eval(), (torch.rand(2, 1, 16, 16),), str(path), input_names=["images"],
        output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), dynamo=True,
    )
    return path


def test_a_variant_without_an_embedding_output_scores_predictions_only(logits_only: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20), 60 * i, np.uint8), mode="L").save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    files = local_inputs(folder)
    scored = score_files(files, partial(OnnxRuntimeBackend, logits_only), GREY, ["a", "b", "c"], projection=None)
    assert scored.features is None and [f.name for f in scored.failures] == ["notes.txt"]
    assert scored.predictions["file"].tolist() == ["0.png", "1.png", "2.png"]
    assert set(scored.predictions["predicted_class"]) <= {"a", "b", "c"}
    assert scored.predictions["confidence"].between(1 / 3, 1.0).all()
    # With a monitoring reference the embedding is needed, and its absence is named.
    projection = fit_projection(np.random.default_rng(0).normal(size=(20, 256)), 4)
    with pytest.raises(NoEmbeddingOutput, match="no 'embedding'"):
        score_files(files, partial(OnnxRuntimeBackend, logits_only), GREY, ["a", "b", "c"], projection)
    # Asked for more processes than there are jobs (or files): scored here, as one process does.
    alone = score_files(files[:1], partial(OnnxRuntimeBackend, logits_only), GREY, ["a", "b", "c"], None, workers=2)
    assert alone.predictions["file"].tolist() == ["0.png"]
    nothing = score_files([], partial(OnnxRuntimeBackend, logits_only), GREY, ["a", "b", "c"], None, workers=2)
    assert nothing.predictions.empty and nothing.failures == []
    # Raised in a scoring worker, it is the same error, not a broken pool.
    with pytest.raises(NoEmbeddingOutput, match="no 'embedding'"):
        score_files(files, partial(OnnxRuntimeBackend, logits_only), GREY, ["a", "b", "c"], projection, chunk_files=2, workers=2)


def test_a_large_batch_is_scored_chunk_by_chunk_with_the_same_rows(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "model.onnx"
    from tasks.export.onnx import export_onnx

    export_onnx(build_model("small_cnn", 3, GREY).eval(), torch.rand(2, 1, 16, 16), path)
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(11):
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), mode="L").save(folder / f"{i:02d}.png")
    (folder / "05-broken.png").write_bytes(b"not a png")
    (folder / "09-empty.png").write_bytes(b"")
    files = local_inputs(folder)
    projection = fit_projection(np.random.default_rng(0).normal(size=(40, 256)), 4)
    whole = score_files(files, partial(OnnxRuntimeBackend, path), GREY, ["a", "b", "c"], projection)
    chunked = score_files(files, partial(OnnxRuntimeBackend, path), GREY, ["a", "b", "c"], projection, chunk_files=4)
    assert len(whole.predictions) == 11 and [f.name for f in chunked.failures] == [f.name for f in whole.failures]
    assert {f.name for f in whole.failures} == {"05-broken.png", "09-empty.png"}
    # Chunks change when files are decoded, not what is computed for each.
    assert chunked.predictions.drop(columns="confidence").equals(whole.predictions.drop(columns="confidence"))
    np.testing.assert_allclose(chunked.predictions["confidence"], whole.predictions["confidence"], rtol=1e-5)
    numeric = whole.features.select_dtypes("number").columns
    np.testing.assert_allclose(chunked.features[numeric].to_numpy(), whole.features[numeric].to_numpy(), rtol=1e-4, atol=1e-5)
    # Scored by two worker processes, four files a job, each with its own back end: the same rows, in order.
    parallel = score_files(files, partial(OnnxRuntimeBackend, path), GREY, ["a", "b", "c"], projection, batch_size=2, chunk_files=4, workers=2)
    assert [f.name for f in parallel.failures] == [f.name for f in whole.failures]
    assert parallel.predictions.drop(columns="confidence").equals(whole.predictions.drop(columns="confidence"))
    np.testing.assert_allclose(parallel.predictions["confidence"], whole.predictions["confidence"], rtol=1e-5)
    np.testing.assert_allclose(parallel.features[numeric].to_numpy(), whole.features[numeric].to_numpy(), rtol=1e-4, atol=1e-5)


def test_a_folder_lists_its_visible_files_in_path_order_each_with_its_content_hash(tmp_path: Path) -> None:
    """Nested folders, hidden names and links, and enough files to hash them in worker processes, in several jobs."""
    folder, outside = tmp_path / "inbox", tmp_path / "outside"
    outside.mkdir()
    (outside / "o.jpg").write_bytes(b"outside")
    names = ["a.jpg", "a/x.jpg", "a/b/c.png", "a-b.jpg", "a_b/z.jpg", "B.jpg", "b.jpg", "z/y.jpg", "a0.jpg", "a/ sp.jpg"]
    names += [f"many/{i}.jpg" for i in range(PARALLEL_FROM_FILES)]
    for name in [*names, ".hidden.jpg", ".h/x.jpg", "z/.y.jpg"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())
    os.symlink(folder / "b.jpg", folder / "link.jpg")  # a link to a file: listed, hashed as the file
    os.symlink(outside / "o.jpg", folder / "a" / "out.jpg")
    os.symlink(folder / "a", folder / "linked-folder")  # a link to a folder: not followed
    os.symlink(folder / "gone", folder / "broken.jpg")
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")  # a link to itself: not a file, not an error
    (folder / "empty").mkdir()
    files = local_inputs(folder)
    expected = sorted([*names, "link.jpg", "a/out.jpg"], key=lambda name: name.split("/"))
    assert [f.name for f in files] == expected
    assert all(f.path == folder / f.name for f in files)
    content = {name: name.encode() for name in names} | {"link.jpg": b"b.jpg", "a/out.jpg": b"outside"}
    assert [f.sha256 for f in files] == [hashlib.sha256(content[f.name]).hexdigest() for f in files]

"""Ingestion at scale: memory flat in the number of images, parallel decoding equal to serial, splits read in batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tasks.data.config import DataConfig
from tasks.data.imagefolder import ingest_imagefolder
from tasks.data.snapshot import SPLIT_CODES

ROOT = Path(__file__).resolve().parents[2]


def write_jpeg_folder(root: Path, per_class: int, size: int = 64, seed: int = 0) -> Path:
    """Two classes of ``per_class`` RGB JPEGs of smooth random colour (compressible, unlike noise)."""
    rng = np.random.default_rng(seed)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            corners = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
            Image.fromarray(corners).resize((size, size), Image.Resampling.BILINEAR).save(root / c / f"{i:05d}.jpg", quality=90)
    return root


# Run in a fresh interpreter so the peak belongs to this ingestion alone; ru_maxrss is in KiB on Linux.
PEAK_SCRIPT = """
import json, resource, sys
from pathlib import Path
from tasks.data.config import DataConfig
from tasks.data.imagefolder import ingest_imagefolder
config = DataConfig(source=sys.argv[1], image_size=64, channels=3, workers=int(sys.argv[3]))
# A small folder first: what ingestion imports on first use (pyarrow, for one) is not what it holds.
ingest_imagefolder(Path(sys.argv[4]), config, Path(sys.argv[2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
snapshot = ingest_imagefolder(Path(sys.argv[1]), config, Path(sys.argv[2]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before, "images": snapshot.num_examples}))
"""


def _peak_growth(folder: Path, warm_up: Path, snapshots: Path, workers: int) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(folder), str(snapshots), str(workers), str(warm_up)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ingestion_memory_does_not_hold_the_pixels(tmp_path: Path) -> None:
    # 3,000 images of 64 x 64 x 3 are 37 MB of pixels; holding them (a list, then a stacked copy) grows the peak by twice that.
    folder = write_jpeg_folder(tmp_path / "images", per_class=1500)
    pixels_mib = 3000 * 64 * 64 * 3 / 2**20
    warm_up = write_jpeg_folder(tmp_path / "few", per_class=10, seed=1)
    measured = _peak_growth(folder, warm_up, tmp_path / "snaps", workers=1)
    assert measured["images"] == 3000
    growth_mib = measured["growth_kib"] / 1024
    assert growth_mib < pixels_mib / 3, f"peak grew {growth_mib:.1f} MiB while ingesting {pixels_mib:.1f} MiB of pixels"


def test_parallel_decoding_gives_the_same_snapshot(tmp_path: Path) -> None:
    folder = write_jpeg_folder(tmp_path / "images", per_class=300, size=24)
    good = (folder / "a" / "00000.jpg").read_bytes()
    (folder / "a" / "cut.jpg").write_bytes(good[: len(good) // 3])
    (folder / "b" / "empty.jpg").write_bytes(b"")
    (folder / "b" / "copy.jpg").write_bytes(good)  # the same bytes under another class: both quarantined
    config = DataConfig(image_size=16, channels=3, workers=1)
    serial = ingest_imagefolder(folder, config, tmp_path / "serial")
    parallel = ingest_imagefolder(folder, config.model_copy(update={"workers": 2}), tmp_path / "parallel")

    assert parallel.version == serial.version and parallel.counts == serial.counts
    assert parallel.quarantined == serial.quarantined
    assert {q.path for q in serial.quarantined} == {"a/cut.jpg", "b/empty.jpg", "b/copy.jpg", "a/00000.jpg"}
    for name in ("images.npy", "labels.npy", "splits.npy", "manifest.json", "metadata.parquet"):
        assert (parallel.directory / name).read_bytes() == (serial.directory / name).read_bytes(), name


def test_splits_are_stored_one_after_another_and_read_in_batches(tmp_path: Path) -> None:
    folder = write_jpeg_folder(tmp_path / "images", per_class=120, size=20)
    snapshot = ingest_imagefolder(folder, DataConfig(image_size=12, channels=3), tmp_path / "snaps")
    codes = np.load(snapshot.directory / "splits.npy")
    assert (np.diff(codes.astype(int)) >= 0).all() and set(codes) == set(SPLIT_CODES.values())
    whole = np.load(snapshot.directory / "images.npy")
    manifest = snapshot.manifest()
    start = 0
    for split in ("train", "val", "test"):
        raw, labels = snapshot.arrays(split)
        assert len(raw) == len(labels) == snapshot.count(split)
        assert np.array_equal(raw[5:9], whole[start + 5 : start + 9])
        assert np.array_equal(np.asarray(raw), whole[start : start + len(raw)])
        inputs, _ = snapshot.model_inputs(split)
        batches = list(inputs.batches(7))
        assert len(batches) == -(-len(raw) // 7) and batches[0].dtype == np.float32
        assert np.allclose(np.concatenate(batches), whole[start : start + len(raw)] / 255.0)
        # Each row is the file the manifest names at that place.
        first = manifest.split_files(split)[0]
        decoded, _ = snapshot.input.decode(folder / first.path)
        assert np.array_equal(raw[0], decoded)
        start += len(raw)


def test_a_class_folder_that_vanishes_mid_ingestion_is_quarantined_not_fatal(tmp_path: Path) -> None:
    folder = write_jpeg_folder(tmp_path / "images", per_class=30, size=16)
    (folder / "b" / "gone.jpg").symlink_to(folder / "b" / "missing.jpg")  # listed, then unreadable
    snapshot = ingest_imagefolder(folder, DataConfig(image_size=8, workers=2), tmp_path / "snaps")
    assert {q.path: q.reason for q in snapshot.quarantined}["b/gone.jpg"].startswith(("unreadable", "not a regular"))


@pytest.mark.parametrize("workers", [0, 3])
def test_workers_setting_is_validated_and_documented(workers: int) -> None:
    assert DataConfig(workers=workers).workers == workers
    with pytest.raises(ValueError, match="workers"):
        DataConfig(workers=-1)


def test_an_abandoned_scratch_folder_is_removed_and_one_in_use_is_kept(tmp_path: Path) -> None:
    import fcntl

    folder = write_jpeg_folder(tmp_path / "images", per_class=20, size=16)
    snaps = tmp_path / "snaps"
    abandoned = snaps / ".decoding-scratch-killed"
    in_use = snaps / ".decoding-scratch-running"
    for scratch in (abandoned, in_use):
        scratch.mkdir(parents=True)
        (scratch / "pixels.npy").write_bytes(b"\0" * 4096)
        (scratch / ".lock").touch()
    with open(in_use / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another ingestion, still running
        ingest_imagefolder(folder, DataConfig(image_size=8), snaps)
    assert not abandoned.exists() and in_use.exists()
    assert not [p for p in snaps.glob(".*-scratch-*") if p != in_use]  # this run's own scratch is gone too


def test_a_snapshot_written_before_metadata_was_kept_gets_it_back(tmp_path: Path) -> None:
    folder = write_jpeg_folder(tmp_path / "images", per_class=30, size=16)
    snapshot = ingest_imagefolder(folder, DataConfig(image_size=8), tmp_path / "snaps")
    kept = snapshot.metadata("test")
    (snapshot.directory / "metadata.parquet").unlink()
    again = ingest_imagefolder(folder, DataConfig(image_size=8), tmp_path / "snaps")
    assert again.version == snapshot.version and len(again.metadata("test")) == len(kept)


def test_a_split_on_disk_reads_masks_and_samples_as_numpy_does(tmp_path: Path) -> None:
    from tasks.compress.calibration import calibration_sample

    folder = write_jpeg_folder(tmp_path / "images", per_class=30, size=16)
    snapshot = ingest_imagefolder(folder, DataConfig(image_size=8), tmp_path / "snaps")
    raw, _ = snapshot.arrays("train")
    whole = np.asarray(raw)
    mask = np.arange(len(raw)) % 3 == 0
    assert np.array_equal(raw[mask], whole[mask]) and np.array_equal(raw[-2:], whole[-2:])
    sample = calibration_sample(raw, 10_000, seed=0)  # fewer images than asked for: all of them, in memory
    assert isinstance(sample, np.ndarray) and np.array_equal(sample, whole)
    assert np.array_equal(calibration_sample(raw, 5, seed=0), whole[np.sort(np.random.default_rng(0).choice(len(raw), 5, replace=False))])


def test_under_ddp_each_process_leaves_out_its_own_lone_last_row(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tasks.train.datamodule import SnapshotDataModule

    folder = write_jpeg_folder(tmp_path / "images", per_class=40, size=16)
    snapshot = ingest_imagefolder(folder, DataConfig(image_size=8), tmp_path / "snaps")
    rows = snapshot.count("train")
    per_process = -(-rows // 2)
    data = SnapshotDataModule(snapshot, batch_size=per_process - 1)  # each process: one full batch and one row
    data.trainer = SimpleNamespace(world_size=2)
    data.setup()
    assert data.train_dataloader().drop_last and not data.val_dataloader().drop_last


def _workers_in_a_daemon(requested: int, results) -> None:  # noqa: ANN001 - a multiprocessing queue
    from tasks.data.workers import decoding_workers

    results.put(decoding_workers(requested, 10_000))


@pytest.mark.parametrize("requested", [0, 2])
def test_a_daemonic_process_such_as_a_dask_workers_decodes_alone(requested: int) -> None:
    import multiprocessing

    from tasks.data.workers import decoding_workers, usable_cpus

    # Here: as asked, or one per usable CPU for 0.
    assert decoding_workers(requested, 10_000) == (requested or usable_cpus())
    assert decoding_workers(0, 10) == 1
    # A daemonic process may not start processes of its own (multiprocessing refuses): it decodes alone.
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    daemon = context.Process(target=_workers_in_a_daemon, args=(requested, results), daemon=True)
    daemon.start()
    daemon.join(30)
    assert results.get(timeout=5) == 1


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_decoding_workers_end_with_the_process_that_started_them(tmp_path: Path) -> None:
    # A killed run leaves no worker behind: forked siblings hold each other's pipes open, so without a
    # watch of their own they would wait for work forever.
    import os
    import signal
    import time

    script = """
import os, sys, time
from tasks.data.workers import worker_pool
def pid():
    time.sleep(0.3)
    return os.getpid()
with worker_pool(2) as pool:
    pids = {f.result() for f in [pool.submit(pid) for _ in range(4)]}
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(120)
"""
    import select

    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    workers: list[int] = []
    try:
        assert select.select([owner.stdout], [], [], 60)[0], "the pool's owner printed no worker"
        workers = [int(pid) for pid in owner.stdout.readline().split()]
        assert workers and all(_alive(pid) for pid in workers)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        owner.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

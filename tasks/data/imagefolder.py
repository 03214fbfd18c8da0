"""The image modality's source: an ImageFolder (one subfolder per class), read into a snapshot."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from tasks.data.config import DataConfig
from tasks.data.contract import ImageInput
from tasks.data.images import BadImage
from tasks.data.snapshot import (
    DatasetSnapshot,
    DataValidationError,
    DecodedFiles,
    QuarantineEntry,
    TextColumn,
    build_snapshot,
    scratch_folder,
)
from tasks.data.stored import StoredRows, create_npy, write_rows
from tasks.data.workers import DecodingWorkerDied, decoding_workers, in_order, worker_pool
from tasks.hashing import sha256_file


def list_imagefolder(root: Path) -> tuple[dict[str, TextColumn], list[QuarantineEntry]]:
    """Files per class folder (recursively, as paths relative to ``root``), and the stray entries outside any class folder.

    Raises:
        DataValidationError: the folder is missing, not a folder, or holds no files in class folders.
    """
    if not root.exists():
        raise DataValidationError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataValidationError(f"data source {root} is not a folder (expected one subfolder per class)")
    per_class: dict[str, TextColumn] = {}
    stray: list[QuarantineEntry] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.startswith("."):
            # Tool folders (.git, .ipynb_checkpoints) are not classes; say so instead of training on them.
            stray.append(QuarantineEntry(path=entry.name, reason="hidden folder, not a class: ignored"))
        elif entry.is_dir():
            per_class[entry.name] = _files_under(entry.name, root)
        else:
            stray.append(QuarantineEntry(path=str(entry.relative_to(root)), reason="not inside a class folder"))
    if not any(per_class.values()):
        raise DataValidationError(
            f"data folder {root} holds no image files (expected one subfolder per class with images inside)"
        )
    return per_class, stray


def _files_under(folder: str, root: Path) -> TextColumn:
    """Every file under ``root/folder`` at any depth, as a path relative to ``root``, in path order.

    A directory named like an image file (``x.png/``) is listed too, so it is reported rather than
    silently skipped. Walked folder by folder with ``os.scandir``, names sorted within each (the order
    of paths compared part by part), and kept compactly: a ``Path`` per file would be the largest thing
    ingestion holds at a million files.
    """
    return TextColumn(_walk(root, folder, {_identity(root / folder)}))


def _walk(root: Path, current: str, seen: set[tuple[int, int]]) -> Iterator[str]:
    names, folders = [], set()
    try:
        with os.scandir(root / current) as entries:
            for entry in entries:
                names.append(entry.name)
                if entry.is_dir():
                    folders.add(entry.name)
    except OSError:  # listed, then unreadable: reported as a file that is not an image, not a crash
        yield current
        return
    names.sort()
    for name in names:
        rel = f"{current}/{name}"
        if name in folders:
            identity = _identity(root / rel)
            if identity not in seen:  # a symbolic link back up the tree is walked once, not forever
                seen.add(identity)
                yield from _walk(root, rel, seen)
            if "." not in name[1:]:
                continue
        yield rel


def _identity(folder: Path) -> tuple[int, int]:
    info = folder.stat()
    return info.st_dev, info.st_ino


# Files one decoding job takes: big enough that sending it to a worker is paid back, small enough to show progress.
JOB_FILES = 256


def _decode_job(
    root: Path, scratch: Path, offset: int, contract: ImageInput, start: int, files: list[str]
) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """Decode ``files`` (rows ``start`` on) into the scratch array at their rows; runs in a worker process.

    Returns the files' sha256 digests (N x 32) and sizes on disk (N x 2), and why the unusable ones are.
    """
    digests = np.zeros((len(files), 32), np.uint8)
    sizes = np.zeros((len(files), 2), np.int32)
    reasons: dict[int, str] = {}
    pixels: dict[int, np.ndarray] = {}
    for n, rel in enumerate(files):
        path = root / rel
        try:
            pixels[start + n], sizes[n] = contract.decode(path)
            digests[n] = np.frombuffer(bytes.fromhex(sha256_file(path)), np.uint8)
        except BadImage as bad:
            reasons[start + n] = bad.reason
        except OSError as exc:  # decoded, then vanished or became unreadable before hashing
            reasons[start + n] = f"unreadable: {exc.strerror or exc}"
    write_rows(scratch, pixels, np.dtype(np.uint8), contract.shape, offset)
    return digests, sizes, reasons


def decode_imagefolder(
    root: Path,
    per_class: dict[str, TextColumn],
    contract: ImageInput,
    scratch: Path,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> DecodedFiles:
    """Decode every file fully into the ``.npy`` array ``scratch``: row ``i`` for file ``i`` in class then file order.

    Labels are the classes' positions in ``per_class``. The dict is emptied as its paths are taken over
    (at a million files each copy of them is tens of MiB).

    ``workers`` > 1 decodes in that many processes, a bounded number of jobs in flight; each job's pixels
    go straight to the file, so memory stays flat whatever the number of files.
    """
    paths = TextColumn(rel for files in per_class.values() for rel in files)
    labels = np.concatenate([np.full(len(files), k, np.int32) for k, files in enumerate(per_class.values())])
    per_class.clear()
    total = len(paths)
    digests = np.zeros((total, 32), np.uint8)
    sizes = np.zeros((total, 2), np.int32)
    reasons: dict[int, str] = {}
    offset = create_npy(scratch, np.dtype(np.uint8), (total, *contract.shape))
    jobs = ((start, (root, scratch, offset, contract, start, paths[start : start + JOB_FILES])) for start in range(0, total, JOB_FILES))
    report_every = max(JOB_FILES, total // 50)
    done = 0
    with worker_pool(workers) as pool:
        try:
            for start, (job_digests, job_sizes, job_reasons) in in_order(pool, workers, _decode_job, jobs):
                digests[start : start + len(job_digests)], sizes[start : start + len(job_sizes)] = job_digests, job_sizes
                reasons.update(job_reasons)
                before, done = done, done + len(job_digests)
                # About 50 reports however many files: a line per job would be thousands at a million files.
                if progress and (done == total or done // report_every > before // report_every):
                    progress(done, total)
        except BrokenProcessPool:
            raise DecodingWorkerDied(
                f"a process decoding {root} died (killed, or out of memory) after {done} of {total} files; "
                f"run again with fewer data.workers (now {workers})"
            ) from None
    return DecodedFiles(
        paths=paths, labels=labels, digests=digests,
        meta={"original_width": sizes[:, 0], "original_height": sizes[:, 1]}, reasons=reasons,
    )


def ingest_imagefolder(
    root: Path,
    config: DataConfig,
    snapshots_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetSnapshot:
    """Validate every file under ``root`` and write a snapshot under ``snapshots_dir``.

    Args:
        root: ImageFolder directory, one subfolder per class.
        config: size, channels, split fractions, validation limits and decoding workers.
        snapshots_dir: where snapshot folders are written, one per version.
        progress: called with (files done, files total) while decoding.

    Raises:
        DataValidationError: see :func:`list_imagefolder` and :func:`tasks.data.snapshot.build_snapshot`.
    """
    per_class, stray = list_imagefolder(root)
    per_class = {name: per_class[name] for name in sorted(per_class)}
    contract = ImageInput(channels=config.channels, image_size=config.image_size)
    files = sum(len(files) for files in per_class.values())
    classes = list(per_class)
    # Decoded pixels wait on disk beside the snapshots (the same file system) until the accepted ones are copied.
    with scratch_folder(snapshots_dir, "decoding") as scratch_dir:
        scratch = scratch_dir / "pixels.npy"
        decoded = decode_imagefolder(root, per_class, contract, scratch, decoding_workers(config.workers, files), progress)
        return build_snapshot(
            decoded,
            inputs=StoredRows.from_npy(scratch),
            stray=stray,
            source=str(root),
            classes=classes,
            contract=contract,
            config=config,
            snapshots_dir=snapshots_dir,
        )


def merge_imagefolders(roots: list[Path], dest: Path) -> Path:
    """One ImageFolder at ``dest`` holding every file of ``roots`` at its relative path (hard links where possible).

    ``dest`` is rebuilt from scratch, so a file removed from a root is gone from it too. A later
    root's file at the same relative path as an earlier one's is refused rather than overwritten.

    Raises:
        DataValidationError: a root is missing, or two roots hold the same relative path.
    """
    if dest.exists():
        shutil.rmtree(dest)
    for root in roots:
        if not root.is_dir():
            raise DataValidationError(f"data folder {root} does not exist")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            target = dest / path.relative_to(root)
            if target.exists():
                raise DataValidationError(f"{path.relative_to(root)} is in more than one of {[str(r) for r in roots]}")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another file system: copy instead
                shutil.copy2(path, target)
    return dest

"""The image modality's source: an ImageFolder (one subfolder per class), read into a snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from tasks.data.config import DataConfig
from tasks.data.contract import ImageInput
from tasks.data.images import BadImage
from tasks.data.snapshot import DatasetSnapshot, DataValidationError, Example, QuarantineEntry, build_snapshot
from tasks.hashing import sha256_file


def list_imagefolder(root: Path) -> tuple[dict[str, list[Path]], list[QuarantineEntry]]:
    """Files per class folder (recursively), and the stray entries outside any class folder.

    Raises:
        DataValidationError: the folder is missing, not a folder, or holds no files in class folders.
    """
    if not root.exists():
        raise DataValidationError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataValidationError(f"data source {root} is not a folder (expected one subfolder per class)")
    per_class: dict[str, list[Path]] = {}
    stray: list[QuarantineEntry] = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name.startswith("."):
            # Tool folders (.git, .ipynb_checkpoints) are not classes; say so instead of training on them.
            stray.append(QuarantineEntry(path=entry.name, reason="hidden folder, not a class: ignored"))
        elif entry.is_dir():
            # A directory named like an image file is listed so it is reported, not silently skipped.
            per_class[entry.name] = sorted(p for p in entry.rglob("*") if not p.is_dir() or p.suffix)
        else:
            stray.append(QuarantineEntry(path=str(entry.relative_to(root)), reason="not inside a class folder"))
    if not any(per_class.values()):
        raise DataValidationError(
            f"data folder {root} holds no image files (expected one subfolder per class with images inside)"
        )
    return per_class, stray


def read_imagefolder(
    root: Path,
    per_class: dict[str, list[Path]],
    contract: ImageInput,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[Example | QuarantineEntry]:
    """Decode every file fully, in class then file order: an example, or a quarantine entry saying why not."""
    total = sum(len(files) for files in per_class.values())
    done = 0
    for class_name, files in per_class.items():
        for path in files:
            rel = str(path.relative_to(root))
            done += 1
            if progress and (done % 200 == 0 or done == total):
                progress(done, total)
            try:
                pixels, (width, height) = contract.decode(path)
                digest = sha256_file(path)
            except BadImage as bad:
                yield QuarantineEntry(path=rel, reason=bad.reason)
                continue
            except OSError as exc:  # decoded, then vanished or became unreadable before hashing
                yield QuarantineEntry(path=rel, reason=f"unreadable: {exc.strerror or exc}")
                continue
            yield Example(
                path=rel, sha256=digest, label=class_name, raw=pixels,
                meta={"original_width": width, "original_height": height},
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
        config: size, channels, split fractions and validation limits.
        snapshots_dir: where snapshot folders are written, one per version.
        progress: called with (files done, files total) while decoding.

    Raises:
        DataValidationError: see :func:`list_imagefolder` and :func:`tasks.data.snapshot.build_snapshot`.
    """
    per_class, stray = list_imagefolder(root)
    contract = ImageInput(channels=config.channels, image_size=config.image_size)
    return build_snapshot(
        [*stray, *read_imagefolder(root, per_class, contract, progress)],
        source=str(root),
        classes=sorted(per_class),
        files_seen=sum(len(files) for files in per_class.values()) + len(stray),
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
    import os
    import shutil

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

"""Immutable, content-addressed releases: files first, ``manifest.json`` last.

A version is the hash of its files' paths and sha256s, so the same content
always gets the same version and re-publishing it is a no-op. A version
folder without ``manifest.json`` is an interrupted upload: every reader here
ignores it, and publishing the same content again completes it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError

from tasks.errors import LeptonError
from tasks.hashing import sha256_bytes, sha256_file
from tasks.registry.config import validate_name
from tasks.registry.manifest import ManifestError, ReleaseDraft, ReleaseFile, ReleaseManifest
from tasks.registry.store import ArtifactStore, ConditionalWriteFailed, ObjectNotFound

MANIFEST = "manifest.json"


class IntegrityError(LeptonError):
    """A downloaded file does not match the sha256 in its release manifest."""


class Release(BaseModel):
    """A published version in the store."""

    model: str
    version: str
    uri: str
    manifest_uri: str
    served_variant: str
    promoted: bool = False
    gate_reason: str = ""
    files_uploaded: int = 0
    files_reused: int = 0


def version_prefix(model: str, version: str) -> str:
    """Store key prefix of one version, after validating both names."""
    return f"models/{validate_name('model name', model)}/{validate_name('version', version)}"


def content_version(files: dict[str, Path]) -> tuple[str, list[ReleaseFile]]:
    """Hash every file; the version is the hash of (path, sha256) pairs."""
    entries = [
        ReleaseFile(path=rel, sha256=sha256_file(path), size=path.stat().st_size) for rel, path in sorted(files.items())
    ]
    version = sha256_bytes("\n".join(f"{e.path} {e.sha256}" for e in entries).encode())[:12]
    return version, entries


def publish_release(
    store: ArtifactStore,
    files: dict[str, Path],
    draft: ReleaseDraft,
    progress: Callable[[str], None] | None = None,
    on_file: Callable[[int, int], None] | None = None,
) -> Release:
    """Upload ``files`` (release-relative path -> local file), then the manifest.

    ``progress`` gets a line per file sent; ``on_file(done, total)`` is called as each file is stored.

    The manifest is ``draft`` completed with the version, creation time and the
    file list with hashes. A version whose manifest already exists is left as
    it is (releases are immutable) and returned. Calling this again after a
    failure resumes it: files already stored with their sha256 are not sent again.
    """
    version, entries = content_version(files)
    prefix = version_prefix(draft.model, version)
    release = Release(
        model=draft.model,
        version=version,
        uri=store.location(prefix),
        manifest_uri=store.location(f"{prefix}/{MANIFEST}"),
        served_variant=draft.served.name,
    )
    if store.exists(f"{prefix}/{MANIFEST}"):
        return release.model_copy(update={"files_reused": len(entries)})
    uploaded = reused = 0
    for number, entry in enumerate(entries, 1):
        key = f"{prefix}/{entry.path}"
        # Keys are content-addressed, so a file already there with its hash is this very file,
        # left by an earlier, interrupted attempt: resume instead of sending it again.
        if store.stored_sha256(key) == entry.sha256:
            reused += 1
        else:
            if progress:
                progress(f"[{number}/{len(entries)}] uploading {entry.path} ({_size(entry.size)})")
            store.put_file(files[entry.path], key, entry.sha256, on_bytes=_byte_progress(entry, progress))
            uploaded += 1
        if on_file:
            on_file(number, len(entries))
    if progress and reused:
        progress(f"{reused} of {len(entries)} files were already in the store with the right sha256; not sent again")
    manifest = ReleaseManifest.model_validate(
        {**draft.model_dump(), "version": version, "created_at": datetime.now(timezone.utc), "files": entries}
    )
    try:
        # Written last, and only if absent: its presence is what makes the version visible.
        store.put_bytes(f"{prefix}/{MANIFEST}", manifest.model_dump_json(indent=2).encode(), if_absent=True)
    except ConditionalWriteFailed:
        pass  # a concurrent publish of the same content finished first; the version is complete either way
    return release.model_copy(update={"files_uploaded": uploaded, "files_reused": reused})


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.1f} KiB"


LARGE_FILE = 8 * 2**20


def _byte_progress(entry: ReleaseFile, progress: Callable[[str], None] | None) -> Callable[[int], None] | None:
    """Report a large file's upload at every quarter; small files are reported once, before they go."""
    if progress is None or entry.size < LARGE_FILE:
        return None
    sent = 0
    reported = 0

    def on_bytes(count: int) -> None:
        nonlocal sent, reported
        sent += count
        quarter = min(4, sent * 4 // entry.size)
        if quarter > reported:
            reported = quarter
            progress(f"  {entry.path}: {quarter * 25}% of {_size(entry.size)}")

    return on_bytes


def read_manifest(store: ArtifactStore, model: str, version: str) -> ReleaseManifest:
    """The manifest of a complete version (schema 1 is upgraded as it is read).

    Raises:
        ObjectNotFound: no such version, or an incomplete one (no manifest).
        ManifestError: not a manifest this code reads (the message says why and where).
    """
    key = f"{version_prefix(model, version)}/{MANIFEST}"
    data, _ = store.get_bytes(key)
    try:
        return ReleaseManifest.model_validate_json(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors()[:5])
        raise ManifestError(f"{store.location(key)} is not a release manifest this code reads: {problems}") from None


def list_versions(store: ArtifactStore, model: str) -> list[ReleaseManifest]:
    """Complete versions of ``model`` (those with a manifest), oldest first."""
    validate_name("model name", model)
    manifests = [
        read_manifest(store, model, key.split("/")[2])
        for key in store.list_keys(f"models/{model}/")
        if key.count("/") == 3 and key.endswith(f"/{MANIFEST}")
    ]
    return sorted(manifests, key=lambda m: m.created_at)


def download_release(
    store: ArtifactStore,
    model: str,
    version: str,
    dest: Path,
    cache_dir: Path,
    only: str | None = None,
    manifest: ReleaseManifest | None = None,
) -> ReleaseManifest:
    """Download a version's files into ``dest``, each verified against the manifest; return the manifest.

    Files are cached under ``cache_dir`` by sha256, so a second download of the
    same content reads nothing from the store. ``only`` restricts the download
    to files under that release-relative folder (e.g. one variant); ``manifest``
    saves reading it again when the caller already read it from this store.

    Raises:
        IntegrityError: a file whose sha256 differs from the manifest's, named.
        ObjectNotFound: the version is missing or incomplete.
    """
    manifest = manifest or read_manifest(store, model, version)
    prefix = version_prefix(model, version)
    for entry in manifest.files_under(only) if only else manifest.files:
        rel, expected = entry.path, entry.sha256
        cached = cache_dir / expected[:2] / expected
        if not cached.exists():
            partial = cached.with_name(cached.name + ".partial")
            store.get_file(f"{prefix}/{rel}", partial)
            actual = sha256_file(partial)
            if actual != expected:
                partial.unlink(missing_ok=True)
                raise IntegrityError(
                    f"{store.location(f'{prefix}/{rel}')} has sha256 {actual}, but the manifest of "
                    f"{model} {version} says {expected}: refusing the tampered or corrupted file"
                )
            partial.rename(cached)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        # Replaced, not rewritten: a runtime that memory-mapped the old file (a version still draining) keeps it.
        staged = target.with_name(f"{target.name}.{os.getpid()}.partial")
        shutil.copyfile(cached, staged)
        os.replace(staged, target)
    return manifest

"""The one way to use a released version: fetch its files (each sha256-verified), open a variant, list a split.

The gate, scoring, monitoring, explanations and benchmarks (and next the online server) reach a
release through here, so what they run is what production serves, byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
from pathlib import Path

from pydantic import BaseModel

from tasks.data.snapshot import DatasetManifest
from tasks.errors import LeptonError
from tasks.export.measure import measuring_host
from tasks.hashing import sha256_bytes, sha256_file
from tasks.host import others_cpu_share, usable_cpus
from tasks.export.backends import Backend, open_backend
from tasks.registry.aliases import read_alias
from tasks.registry.config import HostChoiceConfig
from tasks.registry.hostchoice import HostChoice, builds_choice, choose_on_host
from tasks.registry.manifest import ManifestError, ReleaseManifest
from tasks.registry.release import download_release, read_manifest
from tasks.registry.store import ArtifactStore


# A host's choice timed while other processes used more of its CPUs than this is used once, not kept.
BUSY_ELSEWHERE = 0.25


class NoProductionRelease(LeptonError):
    """There is nothing in production to score with, monitor or explain."""


class SplitNotAvailable(LeptonError):
    """The files of a release's split are not on this machine (they are named, not copied, by the release)."""


class FetchedRelease(BaseModel):
    """A released version whose needed files are downloaded into ``release_dir`` and verified."""

    model: str
    version: str
    release_dir: Path
    manifest: ReleaseManifest

    @property
    def monitored(self) -> bool:
        """Whether the release carries a monitoring reference (releases built before monitoring do not)."""
        return self.manifest.monitoring is not None

    def open(self, variant: str | None = None, threads: int | None = None, spin: bool = True) -> Backend:
        """A back end for one of its variants (default: the served one); see :func:`open_variant`."""
        return open_variant(self.manifest, self.release_dir, variant, threads, spin)

    def open_here(
        self,
        variant_choice: HostChoiceConfig,
        batch_size: int,
        runtimes: Sequence[str],
        threads: int | None = None,
        spin: bool = True,
        cache_dir: Path | None = None,
    ) -> tuple[HostChoice, Backend]:
        """The variant this host serves, why, and its back end: the candidates timed here
        (:meth:`open_on_host`), or with ``variant_choice.measure`` off the build's choice.

        Raises:
            HostCannotServe: no variant this host may serve can run here.
        """
        if not variant_choice.measure:
            return builds_choice(self.manifest, lambda name: self.open(name, threads, spin), batch_size, runtimes)
        return self.open_on_host(batch_size, variant_choice.seconds, runtimes, threads, spin, cache_dir)

    def open_on_host(
        self,
        batch_size: int,
        seconds: float,
        runtimes: Sequence[str],
        threads: int | None = None,
        spin: bool = True,
        cache_dir: Path | None = None,
    ) -> tuple[HostChoice, Backend]:
        """The host candidate fastest on this host at ``batch_size``, open (see :func:`choose_on_host`).

        With ``cache_dir``, a choice timed earlier on this same host for this version is reused (see
        :func:`_host_key` for what "same" takes), so a scheduled scorer times the candidates once per release;
        a choice timed while other processes used more than ``BUSY_ELSEWHERE`` of the CPUs is used, not kept.
        The candidates' files must have been fetched (``fetch_release(..., candidates=True)``).
        """
        cached = None
        if cache_dir is not None:
            cached = cache_dir / "host-choice" / self.model / self.version / f"{_host_key(batch_size, threads, spin, runtimes)}.json"
            try:
                choice = HostChoice.model_validate_json(cached.read_text())
                backend = self.open(choice.variant, threads, spin)
            except FileNotFoundError:
                pass
            except Exception:  # noqa: BLE001 - unreadable, stale or no longer opening: time the candidates again
                cached.unlink(missing_ok=True)
            else:
                reason = f"{choice.reason} (timed on this host at {choice.measured_at:%Y-%m-%d %H:%M} UTC; kept in {cached})"
                return choice.model_copy(update={"reason": reason}), backend
        with others_cpu_share() as busy:
            choice, backend = choose_on_host(
                self.manifest, lambda name: self.open(name, threads, spin), batch_size, seconds, runtimes
            )
        if cached is not None and (busy() or 0.0) > BUSY_ELSEWHERE:
            # Timed while other work took the CPUs: the ranking may be that load's, not this host's.
            note = f"not kept: other processes used {busy():.0%} of the CPUs while it was timed; the next run times it again"
            return choice.model_copy(update={"reason": f"{choice.reason} ({note})"}), backend
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
            partial.write_text(choice.model_dump_json(indent=1))
            partial.replace(cached)  # atomic: a concurrent scorer reads a whole choice or none
        return choice, backend


def _host_key(batch_size: int, threads: int | None, spin: bool, runtimes: Sequence[str]) -> str:
    """What a host's timing depends on: CPU and flags, the CPUs this process may use, the runtimes'
    versions, and how the candidates are run (batch, threads, spinning, runtimes allowed)."""
    import onnxruntime
    import openvino

    facts = [
        measuring_host().model_dump(), usable_cpus(), onnxruntime.__version__, openvino.__version__,
        batch_size, threads, spin, sorted(runtimes),
    ]
    return sha256_bytes(json.dumps(facts).encode())[:16]


class LabelledFile(BaseModel):
    """A file of a release's dataset split: its path in the dataset, where it is on this machine, and its label."""

    name: str
    path: Path
    sha256: str
    label: str


def open_variant(
    manifest: ReleaseManifest, release_dir: Path, name: str | None = None, threads: int | None = None, spin: bool = True
) -> Backend:
    """A back end for variant ``name`` (default: the served one) of a release downloaded into ``release_dir``.

    Raises:
        ManifestError: the release has no variant of that name.
        FileNotFoundError: its files were not downloaded into ``release_dir``.
        UnsafeArtifactError: a PyTorch state dict that would need arbitrary objects unpickled.
    """
    variant = manifest.variant(name or manifest.served.name)
    path = release_dir / variant.name / variant.entrypoint
    if not path.is_file():
        raise FileNotFoundError(f"{variant.name} of {manifest.model} {manifest.version} is not downloaded: no {path}")

    def architecture():  # noqa: ANN202 - a torch module; torch is imported only for a torch variant
        from tasks.train.models import build_model

        return build_model(manifest.training.model, len(manifest.classes), manifest.input)

    return open_backend(variant.runtime, path, threads, torch_model=architecture, spin=spin, precision=variant.precision)


def fetch_release(
    store: ArtifactStore,
    model: str,
    version: str,
    work_dir: Path,
    extra: Sequence[str] = (),
    monitoring: bool = True,
    manifest: ReleaseManifest | None = None,
    candidates: bool = False,
) -> FetchedRelease:
    """Download (verified, cached by hash) a version's served variant, its monitoring files and ``extra`` folders.

    ``monitoring=False`` leaves the monitoring reference out; ``candidates=True`` adds every host
    candidate (the variants a host may time and serve instead); ``manifest`` saves reading it again.

    Raises:
        ObjectNotFound: no such complete version.
        IntegrityError: a file differs from its manifest's sha256.
    """
    manifest = manifest or read_manifest(store, model, version)
    served = [v.name for v in manifest.host_candidates()] if candidates else [manifest.served.name]
    parts = [*served, *(["monitoring"] if monitoring and manifest.monitoring else []), *extra]
    release_dir = work_dir / "production" / model / version
    for folder in dict.fromkeys(parts):
        download_release(store, model, version, release_dir, work_dir / "cache", only=folder, manifest=manifest)
    return FetchedRelease(model=model, version=version, release_dir=release_dir, manifest=manifest)


def production_version(store: ArtifactStore, model: str) -> str | None:
    """The version the ``production`` alias points at; None when nothing was promoted yet."""
    alias, _ = read_alias(store, model)
    return alias.version if alias else None


def fetch_production(
    store: ArtifactStore, model: str, work_dir: Path, extra: Sequence[str] = (), candidates: bool = False
) -> FetchedRelease:
    """Production's release, its files downloaded and verified (see :func:`fetch_release`).

    Raises:
        NoProductionRelease: the model has no production alias in this store.
    """
    version = production_version(store, model)
    if version is None:
        raise NoProductionRelease(f"{model} has no production release in {store.uri}; run the build flow first")
    return fetch_release(store, model, version, work_dir, extra, candidates=candidates)


def release_split(store: ArtifactStore, release: FetchedRelease, cache_dir: Path, split: str = "test") -> list[LabelledFile]:
    """The files of one split of the release's dataset, as this machine has them, each checked by sha256.

    The release holds the dataset's manifest (paths, sha256, labels), not the images: they are
    read from the source the build read them from.

    Raises:
        SplitNotAvailable: some of the split's files are not at their source on this machine, or changed.
    """
    download_release(
        store, release.model, release.version, release.release_dir, cache_dir, only="dataset", manifest=release.manifest
    )
    dataset = DatasetManifest.model_validate_json((release.release_dir / "dataset" / "manifest.json").read_text())
    root = Path(release.manifest.dataset.source)
    files = [LabelledFile(name=f.path, path=root / f.path, sha256=f.sha256, label=f.label) for f in dataset.split_files(split)]
    missing = [f.path for f in files if not f.path.is_file()]
    if missing:
        raise SplitNotAvailable(
            f"{len(missing)} of the {len(files)} {split} files of {release.model} {release.version} are not on this "
            f"machine (the build read them from {root}; first missing: {missing[0]}); use a folder or an s3:// prefix"
        )
    changed = [f.path for f in files if sha256_file(f.path) != f.sha256]
    if changed:
        raise SplitNotAvailable(
            f"{len(changed)} of the {len(files)} {split} files of {release.model} {release.version} changed since the "
            f"build read them (sha256 differs; first: {changed[0]}); use a folder or an s3:// prefix"
        )
    return files


def release_table_split(store: ArtifactStore, release: FetchedRelease, cache_dir: Path, split: str, out_dir: Path) -> Path:
    """The rows of one split of a table release's dataset, read again from its source and written as one CSV.

    The release names each row by ``file:line`` of the source the build read. Every row's label
    is checked against the release's: a source edited since the build is refused, not explained.

    Raises:
        SplitNotAvailable: the source is not on this machine, or its rows changed.
    """
    from tasks.data.tables import TableError, canonical_label, read_table

    download_release(
        store, release.model, release.version, release.release_dir, cache_dir, only="dataset", manifest=release.manifest
    )
    dataset = DatasetManifest.model_validate_json((release.release_dir / "dataset" / "manifest.json").read_text())
    source = Path(release.manifest.dataset.source)
    rows = dataset.split_files(split)
    by_file: dict[str, dict[int, str]] = {}
    for row in rows:
        name, _, line = row.path.rpartition(":")
        by_file.setdefault(name, {})[int(line)] = row.label
    label_column = release.manifest.input.label_column
    frames = []
    for name, lines in by_file.items():
        path = source if source.is_file() and source.name == name else source / name
        try:
            table = read_table(path, name=name)
        except (OSError, TableError) as exc:
            raise SplitNotAvailable(
                f"the {split} rows of {release.model} {release.version} come from {path}, which cannot be read here ({exc}); "
                "use a folder or an s3:// prefix of table files"
            ) from None
        pick = [i for i, line in enumerate(table.lines) if int(line) in lines]
        frame = table.frame.iloc[pick]
        changed = [
            int(table.lines[i]) for i, label in zip(pick, canonical_label(frame[label_column]))
            if label != lines[int(table.lines[i])]
        ] if label_column in frame.columns else list(lines)
        if len(pick) != len(lines) or changed:
            raise SplitNotAvailable(
                f"{path} changed since {release.model} {release.version} was built from it (rows of the {split} split "
                "missing or relabelled); use a folder or an s3:// prefix of table files"
            )
        frames.append(frame)
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{split}-rows.csv"
    pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return out

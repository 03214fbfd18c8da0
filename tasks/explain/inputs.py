"""What to explain: the release's test split, the latest scored batch, a folder or an ``s3://`` prefix."""

from __future__ import annotations

from pathlib import Path

from tasks.errors import LeptonError
from tasks.registry.config import StoreConfig
from tasks.hashing import sha256_file
from tasks.registry.serving import FetchedRelease, release_split, release_table_split
from tasks.registry.store import open_store
from tasks.score.inputs import InputBatch, InputFile, batch_id, collect_batch
from tasks.score.logs import latest_log

TEST_SPLIT = "test-split"
LATEST_BATCH = "latest-batch"


class NothingToExplain(LeptonError):
    """The chosen source has no input this run can read."""


def explain_inputs(production: FetchedRelease, source: str, store_config: StoreConfig, work_dir: Path) -> InputBatch:
    """The candidate inputs from ``source``, on local disk.

    Raises:
        SplitNotAvailable: ``test-split`` of a release built from files not on this machine.
        NothingToExplain: no scored batch yet, or its files are gone.
    """
    store = open_store(store_config)
    if source == TEST_SPLIT and production.manifest.input.kind == "tabular":
        table = release_table_split(store, production, work_dir / "cache", "test", work_dir / "explain" / production.version)
        files = [InputFile(name=table.name, path=table, sha256=sha256_file(table))]
    elif source == TEST_SPLIT:
        split = release_split(store, production, work_dir / "cache", "test")
        files = [InputFile(name=f.name, path=f.path, sha256=f.sha256) for f in split]
    elif source == LATEST_BATCH:
        batch = latest_log(store, "predictions", production.model)
        if batch is None:
            raise NothingToExplain(f"{production.model} has no scored batch yet; run the score flow first")
        if "path" not in batch.columns:
            raise NothingToExplain("the latest scored batch does not record its files' paths; explain its folder instead")
        if production.manifest.input.kind == "tabular":
            # Rows of a few files: each file once (its rows are read again from it).
            paths = sorted({Path(p) for p in batch["path"] if Path(p).is_file()})
            files = [InputFile(name=p.name, path=p, sha256=sha256_file(p)) for p in paths]
        else:
            files = [
                InputFile(name=r.file, path=Path(r.path), sha256=r.image_sha256) for r in batch.itertuples() if Path(r.path).is_file()
            ]
        if not files:
            raise NothingToExplain("the files of the latest scored batch are no longer on this machine")
    else:
        return collect_batch(source, store_config, work_dir)
    return InputBatch(source=source, batch_id=batch_id(files), files=files)

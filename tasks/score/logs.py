"""Production logs in the store: one immutable Parquet object per scored batch.

``monitoring/{model}/{YYYY-MM-DD}/{YYYYMMDDTHHMMSSZ}-{batch}.parquet`` holds the monitoring
features of a batch; ``predictions/{model}/...`` the same way holds its predictions. S3 has no
append: a batch is written whole, once (if absent), so a reader never sees half a log.
"""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta, timezone

import pandas as pd

from tasks.registry.config import validate_name
from tasks.registry.store import ArtifactStore, ConditionalWriteFailed

KINDS = ("monitoring", "predictions")
_NAME = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{12})\.parquet$")
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# Runs of one batch at the same time agree on its stamp through a claim; a claim older than this was
# left by a run that failed before logging, and a later run logs under its own time instead (its rows
# would otherwise land in a window long past).
CLAIM_EXPIRES = timedelta(hours=1)


def log_key(kind: str, model: str, scored_at: datetime, batch_id: str) -> str:
    """Store key of one batch's log."""
    if kind not in KINDS:
        raise ValueError(f"log kind {kind!r}; allowed: {KINDS}")
    stamp = scored_at.astimezone(timezone.utc)
    return f"{kind}/{validate_name('model name', model)}/{stamp:%Y-%m-%d}/{stamp.strftime(STAMP_FORMAT)}-{batch_id}.parquet"


def write_log(store: ArtifactStore, kind: str, model: str, frame: pd.DataFrame, scored_at: datetime, batch_id: str) -> str:
    """Write one batch's rows as a single object, only if absent; return its key."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    key = log_key(kind, model, scored_at, batch_id)
    try:
        store.put_bytes(key, buffer.getvalue(), if_absent=True)
    except ConditionalWriteFailed:
        pass  # a retry of the same batch at the same second: the object is already whole
    return key


def batch_logged(store: ArtifactStore, kind: str, model: str, batch_id: str) -> str | None:
    """The key of an earlier log of this batch, if any (a batch is scored once)."""
    for key in store.list_keys(f"{kind}/{validate_name('model name', model)}/"):
        match = _NAME.match(key.rsplit("/", 1)[-1])
        if match and match.group(2) == batch_id:
            return key
    return None


def batch_logs(store: ArtifactStore, model: str, batch_id: str) -> dict[str, str]:
    """The keys of this batch's earlier logs, by kind (one listing of each kind)."""
    return {kind: key for kind in KINDS if (key := batch_logged(store, kind, model, batch_id))}


def scored_before(logged: dict[str, str], monitored: bool) -> str | None:
    """The predictions key when the batch was logged completely before (with its monitoring rows, if monitored)."""
    if "predictions" in logged and (not monitored or "monitoring" in logged):
        return logged["predictions"]
    return None


def log_batch(
    store: ArtifactStore,
    model: str,
    release_version: str,
    batch_id: str,
    predictions: pd.DataFrame,
    monitoring: pd.DataFrame | None,
    logged: dict[str, str],
    variant: str | None = None,
    claim: bool = True,
) -> tuple[str, str | None]:
    """Write a scored batch's predictions and monitoring rows, each once, under one time stamp; return both keys.

    Each row carries the release version and the ``variant`` that computed it (a host may serve
    another in-budget variant than the build chose; its rows compare with that variant's reference).

    ``logged`` holds the batch's earlier logs (:func:`batch_logs`). When an earlier attempt wrote one
    of the two and failed before the other, this completes the batch under that attempt's stamp: no
    row is logged twice and none is lost. Runs of one batch at the same time (two workers handed the
    same shard) agree on the stamp through a claim object written only if absent, so their logs have
    the same keys and only the first write of each lands. ``claim=False`` skips that request where
    batch ids are never shared (the server's request log draws a new one per flush).
    """
    if logged:
        stamp = _NAME.match(next(iter(logged.values())).rsplit("/", 1)[-1]).group(1)
    elif not claim:
        stamp = datetime.now(timezone.utc).strftime(STAMP_FORMAT)
    else:
        stamp = _claimed_stamp(store, model, batch_id, datetime.now(timezone.utc).strftime(STAMP_FORMAT))
    scored_at = _stamp_time(stamp)
    keys = []
    for kind, frame in (("predictions", predictions), ("monitoring", monitoring)):
        if frame is None:
            keys.append(None)
            continue
        frame = frame.copy()
        frame.insert(0, "scored_at", scored_at)
        frame.insert(1, "release_version", release_version)
        if variant is not None:
            frame.insert(2, "variant", variant)
        keys.append(write_log(store, kind, model, frame, scored_at, batch_id))
    return keys[0], keys[1]


def _claimed_stamp(store: ArtifactStore, model: str, batch_id: str, proposed: str) -> str:
    """The batch's log stamp: ``proposed`` if this run claims the batch first, else the stamp the first claim holds.

    A claim older than ``CLAIM_EXPIRES`` was left by a run that failed before logging anything: this
    run takes it over (conditionally, so two such runs still agree) and logs under its own time.
    """
    key = f"scored-batches/{validate_name('model name', model)}/{batch_id}"
    try:
        store.put_bytes(key, proposed.encode(), if_absent=True)
        return proposed
    except ConditionalWriteFailed:
        data, tag = store.get_bytes(key)
    held = data.decode().strip()
    if _stamp_time(proposed) - _stamp_time(held) <= CLAIM_EXPIRES:
        return held
    try:
        store.put_bytes(key, proposed.encode(), if_match=tag)
        return proposed
    except ConditionalWriteFailed:  # another late run took it over first: its stamp
        return store.get_bytes(key)[0].decode().strip()


def _stamp_time(stamp: str) -> datetime:
    return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=timezone.utc)


def logged_variants(rows: pd.DataFrame, served: str) -> pd.Series:
    """The variant that computed each logged row; rows logged before rows named it were the build's choice, ``served``."""
    if "variant" not in rows:
        return pd.Series(served, index=rows.index, dtype=object)
    return rows["variant"].fillna(served)


def latest_log(store: ArtifactStore, kind: str, model: str) -> pd.DataFrame | None:
    """The rows of the most recently logged batch, or None when nothing was logged."""
    stamped = [
        (match.group(1), key)
        for key in store.list_keys(f"{kind}/{validate_name('model name', model)}/")
        if (match := _NAME.match(key.rsplit("/", 1)[-1]))
    ]
    if not stamped:
        return None
    data, _ = store.get_bytes(max(stamped)[1])
    return pd.read_parquet(io.BytesIO(data))


def read_window(
    store: ArtifactStore,
    kind: str,
    model: str,
    since: datetime | None = None,
    last_rows: int | None = None,
) -> pd.DataFrame:
    """Rows of batches logged at or after ``since``, newest batches first until ``last_rows`` are read.

    Returns an empty frame when nothing was logged in the window.
    """
    entries = []
    for key in store.list_keys(f"{kind}/{validate_name('model name', model)}/"):
        match = _NAME.match(key.rsplit("/", 1)[-1])
        if not match:
            continue  # not a log object (e.g. written by hand): ignored, never half-read
        stamp = _stamp_time(match.group(1))
        if since is None or stamp >= since:
            entries.append((stamp, key))
    frames, rows = [], 0
    for _, key in sorted(entries, reverse=True):
        data, _ = store.get_bytes(key)
        frame = pd.read_parquet(io.BytesIO(data))
        frames.append(frame)
        rows += len(frame)
        if last_rows is not None and rows >= last_rows:
            break
    if not frames:
        return pd.DataFrame()
    window = pd.concat(frames[::-1], ignore_index=True)
    return window.tail(last_rows).reset_index(drop=True) if last_rows is not None else window

"""The retrain cool-down claim: one event-triggered build per model per period, even when two runs race."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tasks.registry.cooldown import claim_key, claim_retrain
from tasks.registry.store import FileStore

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def test_one_claim_per_model_per_period(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert claim_retrain(store, "m", 1.0, "event drift 1", now=NOW) is None
    skipped = claim_retrain(store, "m", 1.0, "event drift 2", now=NOW + timedelta(minutes=59))
    assert skipped.startswith("cool-down: a retrain of m started at 2026-11-29 12:00:00 UTC") and "event drift 1" in skipped
    assert claim_retrain(store, "other", 1.0, "event drift", now=NOW + timedelta(minutes=1)) is None  # per model
    assert claim_retrain(store, "m", 1.0, "event drift 3", now=NOW + timedelta(minutes=61)) is None  # a new period
    assert "event drift 3" in store.get_bytes(claim_key("m"))[0].decode()


def test_of_runs_racing_for_a_period_exactly_one_wins(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert claim_retrain(store, "m", 1.0, "last week", now=NOW - timedelta(days=7)) is None  # an expired claim
    start = threading.Barrier(8)

    def run(index: int) -> str | None:
        start.wait()
        return claim_retrain(FileStore(tmp_path), "m", 1.0, f"run {index}", now=NOW)

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(run, range(8)))
    assert outcomes.count(None) == 1
    assert all(o.startswith("cool-down: ") for o in outcomes if o is not None)


def test_an_unreadable_claim_is_replaced_not_obeyed(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.put_bytes(claim_key("m"), b"{not json")
    assert claim_retrain(store, "m", 1.0, "event drift", now=NOW) is None
    assert claim_retrain(store, "m", 1.0, "event drift again", now=NOW) is not None


def test_a_retry_of_the_claiming_run_keeps_its_claim(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert claim_retrain(store, "m", 1.0, "event drift", by="run-1@host", now=NOW) is None
    assert claim_retrain(store, "m", 1.0, "event drift", by="run-1@host", now=NOW + timedelta(seconds=5)) is None
    assert claim_retrain(store, "m", 1.0, "event drift", by="run-2@host", now=NOW + timedelta(seconds=6)) is not None
    store.put_bytes(claim_key("m"), b'{"at": "2026-11-29T12:00:00", "reason": "by hand"}')  # no time zone: UTC
    assert "by hand" in claim_retrain(store, "m", 1.0, "event", by="run-3@host", now=NOW + timedelta(minutes=5))

"""The retrain cool-down: at most one event-triggered build per model per period, claimed in the store.

Prefect's trigger (``for_each`` + ``within``) already fires at most once per model per window, but
its windows are back to back, so two firings can land a second apart across a boundary. The claim
closes that gap: a run claims ``cooldown/{model}.json`` with a conditional write before building,
so of two runs racing for it exactly one wins, and any run within the period after a claim skips.
It counts starts, not releases: a retrain that fails still holds the period (no storm of retries).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, field_validator

from tasks.registry.config import validate_name
from tasks.registry.store import ArtifactStore, ConditionalWriteFailed, ObjectNotFound


class RetrainClaim(BaseModel):
    """Who started the model's last event-triggered retrain, when, and why."""

    at: datetime
    reason: str
    by: str = ""

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)  # a hand-written time: UTC


def claim_key(model: str) -> str:
    return f"cooldown/{validate_name('model name', model)}.json"


def claim_retrain(
    store: ArtifactStore, model: str, hours: float, reason: str, by: str = "", now: datetime | None = None
) -> str | None:
    """Claim the model's retrain for ``hours``: None when this run holds it, else why it must skip."""
    now = now or datetime.now(timezone.utc)
    key = claim_key(model)
    try:
        data, tag = store.get_bytes(key)
    except ObjectNotFound:
        data, tag = None, None
    try:
        held = RetrainClaim.model_validate_json(data) if data is not None else None
    except ValueError:
        held = None  # an unreadable claim holds nothing; it is replaced (conditionally, on its tag) below
    if held is not None and by and held.by == by:
        return None  # this run's own claim, read again by a retry after its write went through
    if held is not None and now - held.at < timedelta(hours=hours):
        return (
            f"cool-down: a retrain of {model} started at {held.at:%Y-%m-%d %H:%M:%S} UTC, within the last {hours:g} h "
            f"({held.reason}); this one is skipped"
        )
    claim = RetrainClaim(at=now, reason=reason, by=by)
    try:
        store.put_bytes(key, claim.model_dump_json().encode(), if_absent=tag is None, if_match=tag)
    except ConditionalWriteFailed:
        return f"cool-down: another retrain of {model} claimed the period a moment ago; this one is skipped"
    return None

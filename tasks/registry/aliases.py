"""Aliases (``production``) that point at a complete version, moved with conditional writes."""

from __future__ import annotations

import getpass
import json
import socket
from datetime import datetime, timezone

from pydantic import BaseModel

from tasks.registry.config import validate_name
from tasks.registry.release import MANIFEST, version_prefix
from tasks.registry.store import ArtifactStore, ConditionalWriteFailed, ObjectNotFound


class AliasMove(BaseModel):
    """One entry of an alias's history."""

    at: str
    from_version: str | None
    to_version: str
    reason: str
    by: str = ""
    kind: str = "promote"


class Alias(BaseModel):
    """Where an alias points now, and how it got there."""

    name: str
    version: str
    history: list[AliasMove]


def default_actor() -> str:
    """``user@host`` of this process: who moved an alias when no caller says otherwise."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def alias_key(model: str, alias: str) -> str:
    """Store key of an alias document."""
    return f"models/{validate_name('model name', model)}/aliases/{validate_name('alias', alias)}.json"


def read_alias(store: ArtifactStore, model: str, alias: str = "production") -> tuple[Alias | None, str | None]:
    """The alias and its tag (for a conditional move); (None, None) when it was never set."""
    try:
        data, tag = store.get_bytes(alias_key(model, alias))
    except ObjectNotFound:
        return None, None
    return Alias.model_validate_json(data), tag


def move_alias(
    store: ArtifactStore,
    model: str,
    version: str,
    reason: str,
    expected: tuple[Alias | None, str | None],
    alias: str = "production",
    by: str | None = None,
    kind: str = "promote",
) -> Alias:
    """Point ``alias`` at ``version`` if it still is what the caller read (``expected``).

    The move is appended to the alias's history with ``by`` (who moved it;
    default ``user@host``) and ``kind`` (``promote`` or ``rollback``).

    Raises:
        ObjectNotFound: ``version`` has no manifest (an incomplete version is never served).
        ConditionalWriteFailed: another writer moved the alias since ``expected`` was read.
    """
    if not store.exists(f"{version_prefix(model, version)}/{MANIFEST}"):
        raise ObjectNotFound(f"{model} version {version} has no manifest; an alias may only point at a complete version")
    current, tag = expected
    history = list(current.history) if current else []
    history.append(
        AliasMove(
            at=datetime.now(timezone.utc).isoformat(),
            from_version=current.version if current else None,
            to_version=version,
            reason=reason,
            by=by or default_actor(),
            kind=kind,
        )
    )
    moved = Alias(name=alias, version=version, history=history)
    payload = json.dumps(moved.model_dump(), indent=2).encode()
    if tag is None:
        store.put_bytes(alias_key(model, alias), payload, if_absent=True)
    else:
        store.put_bytes(alias_key(model, alias), payload, if_match=tag)
    return moved


def promote_if_unchanged(
    store: ArtifactStore,
    model: str,
    version: str,
    reason: str,
    gated_against: str | None,
    alias: str = "production",
    by: str | None = None,
) -> tuple[bool, str]:
    """Move ``alias`` to ``version`` only if it still points where the gate saw it (``gated_against``).

    Returns (promoted, why). Losing a race is an answer, not an error: the
    caller's version stays complete and listed; only the alias does not move.
    """
    expected = read_alias(store, model, alias)
    current = expected[0].version if expected[0] else None
    if current == version and expected[0] and expected[0].history[-1].reason == reason:
        # A retry after a move whose reply was lost: the move happened, and it was this one.
        return True, reason
    if current != gated_against:
        return False, f"{alias} moved from {gated_against} to {current} while this release was gated"
    try:
        move_alias(store, model, version, reason, expected, alias=alias, by=by)
    except ConditionalWriteFailed:
        return False, f"another release moved {alias} at the same moment"
    return True, reason

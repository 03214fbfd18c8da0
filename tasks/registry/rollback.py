"""Move ``production`` back to an earlier version, after verifying every file of that version."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tasks.errors import LeptonError
from tasks.registry.aliases import Alias, move_alias, read_alias
from tasks.registry.config import validate_name
from tasks.registry.release import download_release, list_versions, read_manifest
from tasks.registry.store import ArtifactStore, ConditionalWriteFailed, ObjectNotFound


class RollbackError(LeptonError):
    """A rollback that cannot be done as asked; the alias was not moved."""


class RollbackResult(BaseModel):
    """What a rollback did."""

    model: str
    from_version: str
    to_version: str
    verified_files: int
    reason: str


def previous_version(alias: Alias) -> str:
    """The version production held before the current one, skipping versions rolled back from.

    Rolling back twice walks further back (A -> B -> C, rollback: B, rollback: A) instead of
    bouncing between the last two.

    Raises:
        RollbackError: production never pointed at another usable version.
    """
    rolled_back_from = {move.from_version for move in alias.history if move.kind == "rollback"}
    for move in reversed(alias.history):
        if move.to_version != alias.version and move.to_version not in rolled_back_from:
            return move.to_version
    raise RollbackError(
        f"{alias.name} is at {alias.version} and has no earlier version to roll back to; name one (to_version)"
    )


def roll_back(
    store: ArtifactStore,
    model: str,
    work_dir: Path,
    to_version: str | None = None,
    reason: str = "rollback",
    by: str | None = None,
    alias: str = "production",
) -> RollbackResult:
    """Point ``alias`` at ``to_version`` (default: the previous version) once all its files verify.

    The history records a default rollback as ``rollback`` and a named one as ``pin``.

    Raises:
        RollbackError: no alias yet, the target is current, missing or incomplete, or the alias
            moved during the rollback.
        IntegrityError: a file of the target differs from its manifest (named); nothing moved.
    """
    validate_name("model name", model)
    expected = read_alias(store, model, alias)
    current = expected[0]
    if current is None:
        raise RollbackError(f"{model} has no {alias} alias yet: there is nothing to roll back")
    target = validate_name("version", to_version) if to_version else previous_version(current)
    if target == current.version:
        raise RollbackError(f"{model} {alias} already points at {target}")
    try:
        manifest = read_manifest(store, model, target)
    except ObjectNotFound:
        known = ", ".join(m.version for m in list_versions(store, model)) or "none"
        raise RollbackError(
            f"{model} has no complete version {target} (missing, or its upload never finished); "
            f"complete versions: {known}"
        ) from None
    # Every file is downloaded and checked against the manifest before the alias moves.
    download_release(store, model, target, work_dir / "rollback" / model / target, work_dir / "cache", manifest=manifest)
    try:
        # "rollback" marks the version left as bad (a later rollback skips it); "pin" only chooses.
        kind = "pin" if to_version else "rollback"
        move_alias(store, model, target, reason, expected, alias=alias, by=by, kind=kind)
    except ConditionalWriteFailed:
        raise RollbackError(f"{model} {alias} moved while rolling back; look at its history and run again") from None
    return RollbackResult(
        model=model,
        from_version=current.version,
        to_version=target,
        verified_files=len(manifest.files),
        reason=reason,
    )

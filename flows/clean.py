"""``python -m flows.clean [--set work_dir=DIR] [--set unused_days=14] [--set apply=true]``: free the work dir.

A build keeps every step's result and files in its work dir so that a rerun reuses them; each new
config, dataset or code version adds more. This lists (and with ``apply`` deletes) what no build has
used for ``unused_days``, never what a kept result still names or a running process holds; the
next build that needs a deleted step computes it again. The command runs without Prefect (it needs
no API); the ``clean`` flow runs the same on a schedule (the ``clean`` deployment, weekly).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from prefect import flow, get_run_logger
from prefect.states import State

from flows.config import CleanConfig
from flows.outcome import unchanged
from tasks.errors import LeptonError

if TYPE_CHECKING:
    from tasks.caching import Entry


class NoWorkDir(LeptonError):
    """The work dir to clean does not exist."""


class CleanFailed(LeptonError):
    """The work dir could not be listed (a folder this user may not read, say)."""


@flow(name="clean", log_prints=True)
def clean(config: CleanConfig = CleanConfig()) -> str | State:
    """Free the work dir: what builds left unused for ``unused_days``, listed, and deleted with ``apply``."""
    if not config.work_dir.exists():
        # A scheduled run on a host where no build ran yet: nothing to free, and no failure to alert on.
        message = f"nothing to clean: {config.work_dir.absolute()} does not exist (no build has kept anything there yet)"
        get_run_logger().warning(message)
        return unchanged("Nothing to clean", message, message, tag="nothing-to-clean")
    report = clean_work_dir(config)
    print(report)
    return report


def clean_work_dir(config: CleanConfig) -> str:
    """List what builds left in the work dir unused for ``unused_days``; delete it with ``apply``; the report."""
    from tasks.caching import remove_entries, stale_entries

    if not config.work_dir.is_dir():
        raise NoWorkDir(f"work_dir {config.work_dir} is not a folder; set work_dir to the one your builds use")
    now = time.time()
    unused = config.unused_days * 86400
    try:
        entries = stale_entries(config.work_dir, unused, now)
    except OSError as exc:
        raise CleanFailed(f"cannot list {exc.filename or config.work_dir}: {exc.strerror or exc}; nothing was removed") from None
    going = [e for e in entries if e.remove]
    # A kept folder's bytes include those of the step folders in it: the outermost entries add up.
    staying = [e for e in entries if not e.remove]
    kept = f"kept: {len(staying)} entries in use ({_size(sum(e.bytes for e in staying if e.kind != 'step folder'))})"
    if not going:
        return f"nothing in {config.work_dir} unused for {config.unused_days:g} days; {kept}"
    if not config.apply:
        head = (
            f"would remove {len(going)} entries unused for {config.unused_days:g} days "
            f"({_size(sum(e.bytes for e in going))}); set apply=true to delete them"
        )
        return "\n".join([head, _table(going, config), kept])
    removed, problems = remove_entries(config.work_dir, going, unused, now)
    freed = _size(sum(e.bytes for e in removed))
    lines = [f"removed {len(removed)} entries unused for {config.unused_days:g} days, {freed} freed"]
    if removed:
        lines.append(_table(removed, config))
    lines += [f"not removed: {problem}" for problem in problems]
    return "\n".join([*lines, kept])


def _table(entries: list[Entry], config: CleanConfig) -> str:
    from tasks.tables import text_table

    return text_table([
        {"kind": e.kind, "path": str(e.path.relative_to(config.work_dir)), "size": _size(e.bytes),
         "last used": datetime.fromtimestamp(e.last_used, timezone.utc).strftime("%Y-%m-%d %H:%M"), "why": e.why}
        for e in entries
    ])


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.clean``: exit 0 listed or cleaned, 2 a bad request."""
    from flows.cli import run

    return run(clean_work_dir, CleanConfig, argv, summarize=lambda _, listing: listing, prog="python -m flows.clean", name="clean")


if __name__ == "__main__":
    raise SystemExit(main())

"""One command line for every flow: ``python -m flows.<name> [--config FILE] [--set key.path=VALUE ...] [--debug]``.

``--config`` reads a JSON file of the flow's config fields (omitted fields keep their defaults);
each ``--set`` overrides one field by its dotted path, the value read as JSON when it parses
(numbers, true/false, lists) and as a plain string otherwise. A bad config, or a failure the
user can act on (bad data, no production release, a refused rollback, a tampered file), prints
one message and exits 2, without a traceback; ``--debug`` shows the traceback too. ``--fresh``
computes every step again instead of reusing what an earlier run on the same work dir kept.

Without ``PREFECT_API_URL`` the run gets a temporary local Prefect API (a uvicorn process). It is
started here, with a watchdog beside it, so that it ends with this process however that ends: a
command killed with SIGKILL leaves nothing running.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tasks.errors import LeptonError

C = TypeVar("C", bound=BaseModel)


def load_config(config_type: type[C], path: Path | None, overrides: list[str]) -> C:
    """The config from a JSON file (or the defaults) with ``key.path=VALUE`` overrides applied.

    Raises:
        ValueError: an unreadable file, bad JSON, an override without ``=``, or a field that fails
            validation; the message names the file or the field and what is allowed.
    """
    try:
        data = json.loads(path.read_text()) if path else {}
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of {config_type.__name__} fields")
    texts: dict[tuple[str, ...], str] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: use KEY=VALUE, e.g. --set train.max_epochs=5")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a plain string
        dotted = tuple(key.split("."))
        _set(data, dotted, value, item)
        texts[dotted] = raw
    try:
        return config_type.model_validate(data)
    except ValidationError as exc:
        # A value that reads as JSON (a version like 123456789012, a reason like 42) is text where the field is text.
        retry = [tuple(map(str, e["loc"])) for e in exc.errors() if e["type"] == "string_type"]
        retry = [loc for loc in retry if loc in texts and not isinstance(_get(data, loc), str)]
        for loc in retry:
            _set(data, loc, texts[loc], "")
        error = exc
        if retry:
            try:
                return config_type.model_validate(data)
            except ValidationError as again:
                error = again
        where = f" in {path}" if path else ""
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in error.errors()
        )
        raise ValueError(f"invalid {config_type.__name__}{where}: {problems}") from None


def _set(data: dict[str, Any], path: tuple[str, ...], value: Any, item: str) -> None:
    """Set ``data[a][b]...`` for the dotted path, creating groups on the way."""
    target = data
    *parents, leaf = path
    for parent in parents:
        target = target.setdefault(parent, {})
        if not isinstance(target, dict):
            raise ValueError(f"--set {item!r}: {parent} is not a group of fields")
    target[leaf] = value


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


class _ExpectedFailures(logging.Filter):
    """Keeps the console to one message for a failure the user can act on (a ``LeptonError``).

    Prefect reports such an error three times or more (the task's and the flow's failure and
    final states), some with a traceback from inside its engine; the command line prints the
    error's own message once instead.
    """

    # Prefect's own failure records, and where they name the exception's class.
    _MENTION = re.compile(
        r"^(?:Task run failed with exception|Encountered exception during execution"
        r"|Finished in state Failed\([\"'](?:Task|Flow) run encountered an exception):? (\w+)[(:]"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], LeptonError):
            return False
        mention = self._MENTION.search(record.getMessage())
        return not (mention and mention.group(1) in _subclass_names(LeptonError))


def _subclass_names(cls: type) -> set[str]:
    """Names of every subclass of ``cls``, at any depth."""
    names = set()
    for sub in cls.__subclasses__():
        names |= {sub.__name__} | _subclass_names(sub)
    return names


# Started beside the temporary API: when the command's process is gone (even by SIGKILL, which no
# handler sees), it stops the API, which would otherwise live on as an orphan. It imports nothing
# heavy, holds the API's pidfd (no other process that later gets its pid is signalled) and ends
# with the API when the command stops it itself.
_WATCHDOG = """
import os, select, signal, sys
parent, server = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the command; the watchdog stays to clean up after it
try:
    handle = os.pidfd_open(server)
except ProcessLookupError:
    sys.exit(0)
while os.getppid() == parent:
    if select.select([handle], [], [], 0.5)[0]:
        sys.exit(0)  # the API ended: the command stopped it
for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
        signal.pidfd_send_signal(handle, sig)
    except ProcessLookupError:
        break
    if select.select([handle], [], [], 5)[0]:
        break
"""


_WATCHDOGS: dict[int, subprocess.Popen[bytes]] = {}  # by the pid they watch; referenced for the process's lifetime


def _watch(pid: int) -> None:
    """Start a watchdog that stops process ``pid`` once this process is gone (once per pid)."""
    if pid not in _WATCHDOGS:
        _WATCHDOGS[pid] = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, "-I", "-c", _WATCHDOG, str(os.getpid()), str(pid)], stdin=subprocess.DEVNULL
        )


def start_temporary_api() -> int | None:
    """Start the temporary Prefect API this process would start on first use, watched so it never outlives us.

    Nothing when an API is configured (``PREFECT_API_URL``, a profile, a test harness) or temporary APIs
    are off. Linux only (pidfds); elsewhere Prefect starts its API itself as before.

    Returns:
        The API process's pid, or None when none was started here.
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled or not hasattr(os, "pidfd_open"):
        return None
    from prefect.server.api.server import SubprocessASGIServer

    class WatchedServer(SubprocessASGIServer):
        """Prefect's temporary API, each uvicorn process watched from the moment it exists (not once it
        answers: a kill while it starts up, which can take seconds, leaves nothing either)."""

        def _run_uvicorn_command(self) -> subprocess.Popen[bytes]:
            process = super()._run_uvicorn_command()
            _watch(process.pid)
            return process

    # The one instance Prefect's clients use when no API is configured (its registry is keyed by port, None
    # here): made and started now, they find it running.
    server = WatchedServer()
    server.start()
    if server.server_process is None:
        return None
    _watch(server.server_process.pid)  # in case a Prefect version starts it some other way
    return server.server_process.pid


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler"]


def run(
    command: Callable[[C], Any],
    config_type: type[C],
    argv: list[str] | None = None,
    summarize: Callable[[C, Any], str] | None = None,
    prog: str | None = None,
    name: str | None = None,
) -> int:
    """Run ``command`` (a flow) with the config the arguments describe; print the summary or the result as JSON.

    Returns the exit status: 0 done, 2 a bad config or a failure the user can act on.
    """
    name = name or getattr(command, "name", None) or command.__name__
    parser = argparse.ArgumentParser(
        prog=prog or f"python -m flows.{name}", description=(command.__doc__ or "").strip().splitlines()[0]
    )
    parser.add_argument("--config", type=Path, help=f"JSON file with {config_type.__name__} fields; omitted fields keep defaults")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override one field by its dotted path, e.g. --set train.max_epochs=5 --set store.uri=s3://bucket/ml",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    parser.add_argument(
        "--fresh", action="store_true",
        help="compute every step again instead of reusing what an earlier run on the same work_dir kept",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(config_type, args.config, args.set)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not os.environ.get("PREFECT_API_URL"):
        # A temporary local API is started for this run and thrown away after it. It keeps its runs in
        # SQLite: under load a write waits for the lock (up to 60 s) instead of failing and logging a
        # retry as an ERROR line; and it sends no telemetry (offline it would log one ERROR per run).
        os.environ.setdefault("PREFECT_SERVER_DATABASE_TIMEOUT", "60")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    quiet = _ExpectedFailures()
    handlers = [] if args.debug else _console_handlers()
    for handler in handlers:
        handler.addFilter(quiet)
    from prefect import Flow
    from prefect.exceptions import CancelledRun
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    if isinstance(command, Flow):  # a plain command (versions, clean) needs no API
        start_temporary_api()
    try:
        with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}) if args.fresh else nullcontext():
            result = command(config)
    except LeptonError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"{name} failed: {exc}", file=sys.stderr)
        return 2
    except CancelledRun as exc:
        if "cool-down:" in str(exc):
            # A build that decided not to go ahead (another retrain holds the period) is not a failure.
            print(f"{name} skipped: {exc}")
            return 0
        print(f"{name} cancelled: {exc}", file=sys.stderr)
        return 2
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)
    print(summarize(config, result) if summarize else result.model_dump_json(indent=2))
    return 0

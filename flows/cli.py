"""One command line for every flow: ``python -m flows.<name> [--config FILE] [--set key.path=VALUE ...] [--debug]``.

``--config`` reads a JSON file of the flow's config fields (omitted fields keep their defaults);
each ``--set`` overrides one field by its dotted path, the value read as JSON when it parses
(numbers, true/false, lists) and as a plain string otherwise. A bad config, or a failure the
user can act on (bad data, no production release, a refused rollback, a tampered file), prints
one message and exits 2, without a traceback; ``--debug`` shows the traceback too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
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


def _console_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if type(h).__name__ == "PrefectConsoleHandler"]


def run(
    command: Callable[[C], Any],
    config_type: type[C],
    argv: list[str] | None = None,
    summarize: Callable[[C, Any], str] | None = None,
    prog: str | None = None,
) -> int:
    """Run ``command`` (a flow) with the config the arguments describe; print the summary or the result as JSON.

    Returns the exit status: 0 done, 2 a bad config or a failure the user can act on.
    """
    name = getattr(command, "name", None) or command.__name__
    parser = argparse.ArgumentParser(
        prog=prog or f"python -m flows.{name}", description=(command.__doc__ or "").strip().splitlines()[0]
    )
    parser.add_argument("--config", type=Path, help=f"JSON file with {config_type.__name__} fields; omitted fields keep defaults")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override one field by its dotted path, e.g. --set train.max_epochs=5 --set store.uri=s3://bucket/ml",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
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
    from prefect.exceptions import CancelledRun

    try:
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

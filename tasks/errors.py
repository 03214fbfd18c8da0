"""What a failure means: one a person must fix (never retried, shown without a traceback), or one worth a retry.

Every error of this project that its user can act on — bad data, a bad request, a refused or
tampered file, a missing release — derives from ``LeptonError``. Its message says what is wrong
and what to do; no retry can change the answer, and the command line prints the message alone.
"""

from __future__ import annotations

from typing import Any


class LeptonError(Exception):
    """An error a user can act on: the message names what is wrong and what to do."""


# Errors no retry fixes: ours, and the built-in ones for bad arguments and missing keys or files.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    LeptonError,
    ValueError,
    TypeError,
    LookupError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry what a flaky network or endpoint may fix, nothing else."""
    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not isinstance(error, PERMANENT_ERRORS)


# The @task settings of every step that talks to the store: three retries, backing off, transient errors only.
STORE_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": [2, 8, 30],
    "retry_condition_fn": retry_if_transient,
}

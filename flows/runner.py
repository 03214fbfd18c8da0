"""Where a flow's independent tasks run: one after another in the flow's process, or on Dask.

``fan_out(task, calls, runner)`` is the one seam. Locally the calls run in order, exactly as a
plain call would. On Dask they run as a subflow whose task runner is prefect-dask's
``DaskTaskRunner``: a ``LocalCluster`` of ``runner.workers`` processes started for it, or the
scheduler at ``runner.address``, so the same flow scales out by configuration alone. The tasks
exchange small results holding paths: the Dask workers must see the same work dir and store (one
machine, or a shared volume and an S3 store on a cluster).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from prefect import Task, flow
from prefect.utilities.annotations import quote

from flows.config import RunnerConfig

R = TypeVar("R")

# Dask's own lifecycle lines (workers starting, plugins removed, comms closed) at INFO drown the flow's log.
QUIET = "warning"


def fan_out(task: Task[..., R], calls: Sequence[dict[str, Any]], runner: RunnerConfig) -> list[R]:
    """``task(**call)`` for each call, in order: here one after another, or in parallel on Dask."""
    if runner.kind == "local" or len(calls) < 2:
        return [task(**call) for call in calls]
    return _on_dask(task, list(calls), runner)


def _on_dask(task: Task[..., R], calls: list[dict[str, Any]], runner: RunnerConfig) -> list[R]:
    from prefect.client.orchestration import get_client
    from prefect_dask import DaskTaskRunner

    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker", "distributed.core"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if runner.address:
        task_runner = DaskTaskRunner(address=runner.address)
    else:
        # The workers report to this flow's API (also when it is a temporary local one), and log warnings only.
        env = {"PREFECT_API_URL": str(get_client(sync_client=True).api_url), "DASK_LOGGING__DISTRIBUTED": QUIET}
        task_runner = DaskTaskRunner(
            cluster_kwargs={
                "n_workers": runner.workers, "threads_per_worker": runner.threads_per_worker, "processes": True,
                "dashboard_address": None, "env": env, "silence_logs": logging.WARNING,
            }
        )

    # What DaskTaskRunner ships to a worker arrives there still wrapped in quote(): unwrapped here.
    calls = [{name: value.unquote() if isinstance(value, quote) else value for name, value in call.items()} for call in calls]

    @flow(name=f"{task.name}-on-dask", task_runner=task_runner, validate_parameters=False)
    def on_dask() -> list[R]:
        futures = [task.submit(**call) for call in calls]
        return [future.result() for future in futures]

    return on_dask()

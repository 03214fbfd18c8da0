"""After `make serve`'s worker has stopped: its flow runs still marked Running or Pending cannot finish.

They are marked Crashed, saying why, so the UI does not show a build running forever. Run by
infra/serve.sh while the server still answers; ``python infra/stopped_runs.py [POOL]``.
"""

from __future__ import annotations

import sys

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed


def mark_stopped_runs(pool: str) -> list[str]:
    """Mark the pool's Running and Pending flow runs Crashed; return their names."""
    unfinished = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=unfinished, work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])))
        for run in runs:
            client.set_flow_run_state(
                run.id,
                Crashed(message=f"the worker of pool {pool} was stopped (Ctrl-C) during this run; run it again"),
                force=True,
            )
    return [run.name for run in runs]


if __name__ == "__main__":
    pool = sys.argv[1] if len(sys.argv) > 1 else "lepton-process"
    for name in mark_stopped_runs(pool):
        print(f"flow run {name} was interrupted: marked Crashed")

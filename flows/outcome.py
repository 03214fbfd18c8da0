"""What a run shows in the Prefect UI's run list: a tag to filter by and, for a run that changed nothing, a state named
for what happened with the reason as its message."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.states import Completed, State


def tag_run(*tags: str) -> None:
    """Add ``tags`` to the running flow run; the run list filters by them. Nothing outside a flow run."""
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    try:
        with get_client(sync_client=True) as client:
            # Tags given when the run was created (the deployment's, the trigger's) stay.
            current = client.read_flow_run(context.flow_run.id).tags
            client.update_flow_run(context.flow_run.id, tags=sorted({*current, *tags}))
    except Exception as exc:  # noqa: BLE001 - a label must not fail a run whose work (a promotion) is done
        get_run_logger().warning("could not tag this run %s: %s", ", ".join(tags), exc)


def unchanged(name: str, message: str, data: Any, tag: str) -> State:
    """A completed run that changed nothing: named for what happened, tagged, the reason as its message."""
    tag_run(tag)
    return Completed(name=name, message=message, data=data)

"""The events Lepton emits, each on the resource ``lepton.model.<name>``: what triggers and automations match.

``prefect.yaml`` (the build trigger) and ``infra/automations.yaml`` (alerting) name these events.
"""

from __future__ import annotations

from typing import Any

DRIFT = "lepton.model.drift.detected"
PERFORMANCE_DEGRADED = "lepton.model.performance.degraded"
PROMOTION_REFUSED = "lepton.model.promotion.refused"


def model_event(event: str, model: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``prefect.events.emit_event`` for ``event`` about ``model``."""
    resource = {"prefect.resource.id": f"lepton.model.{model}", "prefect.resource.name": model}
    return {"event": event, "resource": resource, "payload": {"model": model, **payload}}

"""The Prefect UI's parameter forms: every field described for users, and defaults that survive the round trip.

The UI renders each deployment's form from the flow's parameter schema and sends the values back
as JSON written by JavaScript, where 1.0 and 1 are the same number. A config type that tells them
apart (``float | int``) changed meaning on that trip: "all batches" (1.0) came back as "one batch" (1).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import validate
from pydantic import BaseModel

from flows.build import build
from flows.config import BuildConfig, ExplainConfig, FeedbackConfig, MonitorConfig, RollbackConfig, ScoreConfig
from flows.explain import explain
from flows.feedback import feedback
from flows.monitor import monitor
from flows.rollback import rollback
from flows.score import score
from tests.conftest import as_javascript_sends

FLOWS = [(build, BuildConfig), (score, ScoreConfig), (monitor, MonitorConfig), (feedback, FeedbackConfig),
         (explain, ExplainConfig), (rollback, RollbackConfig)]


def _models(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> set[type[BaseModel]]:
    """``model`` and every config model nested in its fields."""
    seen = set() if seen is None else seen
    if model in seen:
        return seen
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            kind = stack.pop()
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                _models(kind, seen)
            stack.extend(getattr(kind, "__args__", ()))
    return seen


@pytest.mark.parametrize("flow, config", FLOWS, ids=[c.__name__ for _, c in FLOWS])
def test_every_field_of_the_form_is_described_for_users(flow, config) -> None:  # noqa: ANN001
    undescribed = sorted(
        f"{model.__name__}.{name}" for model in _models(config) for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    )
    assert undescribed == []
    schema = json.dumps(parameter_schema(flow.fn).model_dump_for_openapi())
    assert "Prefect UI" not in schema and "Rendered by" not in schema


@pytest.mark.parametrize("flow, config", FLOWS, ids=[c.__name__ for _, c in FLOWS])
def test_the_forms_defaults_come_back_as_the_defaults(flow, config) -> None:  # noqa: ANN001
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    sent = as_javascript_sends(schema["properties"]["config"]["default"])
    received = flow.validate_parameters({"config": json.loads(json.dumps(sent))})["config"]
    # Compared as JSON: 1 and 1.0 are equal in Python, but not to Lightning.
    assert json.dumps(received.model_dump(mode="json"), sort_keys=True) == json.dumps(
        config().model_dump(mode="json"), sort_keys=True
    )


@pytest.mark.parametrize("flow, config", FLOWS, ids=[c.__name__ for _, c in FLOWS])
def test_no_field_takes_both_an_integer_and_a_fraction(flow, config) -> None:  # noqa: ANN001
    # A union of int and float reads the same JSON number two ways; counts and fractions get fields of their own.
    definitions = parameter_schema(flow.fn).model_dump_for_openapi().get("definitions", {})
    mixed = []
    for model, body in definitions.items():
        for name, prop in body.get("properties", {}).items():
            kinds = {option.get("type") for option in prop.get("anyOf", [])}
            if {"integer", "number"} <= kinds:
                mixed.append(f"{model}.{name}")
    assert mixed == []


def test_the_removed_batch_limit_names_its_replacement() -> None:
    with pytest.raises(ValueError, match="max_batches_per_epoch"):
        BuildConfig.model_validate({"train": {"limit_train_batches": 1.0}})


@pytest.mark.parametrize("flow, config", FLOWS, ids=[c.__name__ for _, c in FLOWS])
def test_an_empty_optional_field_is_one_plain_input_the_server_accepts_empty(flow, config) -> None:  # noqa: ANN001
    schema = parameter_schema(flow.fn).model_dump_for_openapi()
    toggles = [
        f"{model}.{name}" for model, body in schema.get("definitions", {}).items()
        for name, prop in body.get("properties", {}).items()
        if {"type": "null"} in prop.get("anyOf", []) and prop.get("default", ...) is None
    ]
    # anyOf [X, null] with default null renders as a type toggle stuck on 'Property is type "None"'.
    assert toggles == []
    # What the server checks before it creates a run from the form: the defaults, None included.
    defaults = {"config": as_javascript_sends(schema["properties"]["config"]["default"])}
    assert validate(defaults, schema, raise_on_error=False) == []

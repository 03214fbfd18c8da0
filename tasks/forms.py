"""Config sections as the Prefect UI renders them: the parameter form of every flow.

Pure pydantic; stages' configs derive from :class:`FormModel`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator

_NULL = {"type": "null"}


def empty_means_none(schema: dict[str, Any]) -> None:
    """Write ``X | None = None`` fields as one plain input that is left empty for None.

    Pydantic writes such a field as ``anyOf: [X, null]`` with ``default: null``; the Prefect UI
    renders that as a type toggle stuck on "None" ('Property is type "None"'). Prefect's own
    convention for an optional value is a typed property without a default, which its parameter
    validation accepts as null, so the form shows an empty input of the value's type. Fields with
    another default (``round_to: int | None = 8``) keep the toggle: there None is a real choice.
    """
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf", [])
        if len(options) != 2 or _NULL not in options or prop.get("default", ...) is not None:
            continue
        (value,) = [option for option in options if option != _NULL]
        if "type" not in value:  # a nested model ($ref) renders as a section either way
            continue
        del prop["anyOf"], prop["default"]
        prop.update(value)


class FormModel(BaseModel):
    """A config section: unknown keys refused, rendered as a form section by the Prefect UI."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=empty_means_none)

    # Keys a section no longer takes, each with what to do instead: an old config is refused with that
    # advice rather than with a bare "extra inputs are not permitted".
    removed_fields: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _refuse_removed(cls, data: object) -> object:
        if isinstance(data, dict):
            for key, instead in cls.removed_fields.items():
                if key in data:
                    raise ValueError(f"{key} was removed: {instead}")
        return data

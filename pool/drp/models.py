"""DRP objects the client core returns, with DRP's JSON keys (``drppy-client``'s models are the
reference). The bridge's models (:mod:`broker_bridge.models`) build on :class:`DrpModel`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_pascal


class DrpModel(BaseModel):
    """Base of DRP objects: PascalCase JSON keys, unknown keys ignored, frozen."""

    model_config = ConfigDict(
        alias_generator=to_pascal, populate_by_name=True, extra="ignore", frozen=True
    )

    def to_drp(self) -> dict[str, Any]:
        """JSON-ready dict with DRP's keys."""
        return self.model_dump(mode="json", by_alias=True)


class Context(DrpModel):
    """A DRP context: which engine runs it and with which image."""

    name: str = Field(min_length=1, max_length=128)
    engine: str = ""
    image: str = ""
    meta: dict[str, str] = Field(default_factory=dict)

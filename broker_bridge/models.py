"""DRP objects and events as pydantic models with DRP's JSON keys (``drppy-client``'s models are
the reference: ``Uuid``, ``Name``, ``Context``, ``Meta``, ``Params`` ...).

Only the fields the bridge reads are declared; every other key is accepted and ignored, so a
newer DRP with more fields parses. Python names are snake_case; JSON keys are PascalCase
(``work_order_mode`` <-> ``WorkOrderMode``).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

# Context is returned by the DRP client core, so it is defined there; bridge code reads it here.
from pool.drp.models import Context as Context
from pool.drp.models import DrpModel


class Machine(DrpModel):
    """A DRP machine (clusters and resource brokers share this shape in DRP 4.x)."""

    uuid: str = Field(min_length=1, max_length=64)
    name: str = ""
    context: str = ""
    meta: dict[str, str] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    profiles: list[str] = Field(default_factory=list)
    runnable: bool = True
    work_order_mode: bool = False
    created_at: str | None = None


class Cluster(Machine):
    """A DRP cluster."""


class ResourceBroker(Machine):
    """A DRP resource broker."""


class Event(DrpModel):
    """One websocket event. ``object`` is the object after the change, ``original`` before."""

    time: str | None = None
    type: str
    action: str
    key: str
    principal: str = ""
    object: Any = None
    original: Any = None

"""Intake: DRP's websocket frames and listed objects, parsed once and filtered cheaply.

A frame becomes one :data:`Change` (a machine, context or cluster changed or went away) or a
:class:`Drop` (an acknowledgement, another object type, an update that cannot matter).
Everything else is bad input: :func:`parse_frame` raises :class:`~broker_bridge.translate.
BadObject` naming a key, and :class:`BadInput` logs each key once and counts every one.
Pure functions over plain data, apart from :class:`BadInput`'s log and counter.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from broker_bridge.models import Cluster, Context, Machine, ResourceBroker
from broker_bridge.translate import SLIM_PARAMS, BadObject, relevant_change

log = logging.getLogger(__name__)

MACHINE_TYPES = frozenset({"machines"})
CLUSTER_TYPES = frozenset({"clusters", "resource_brokers"})
ACTIONS = frozenset({"create", "save", "update", "delete", "destroy"})
DELETES = frozenset({"delete", "destroy"})
#: Frames bigger than this are skipped unread (a resync picks the object up from REST).
MAX_EVENT_BYTES = 4 * 1024 * 1024
#: Distinct bad keys remembered for "log once" (then the memory starts over).
LOGGED_KEYS_MAX = 10_000
#: How much of a bad value a log line quotes.
QUOTE_CHARS = 80


class Drop(StrEnum):
    """Why a well-formed frame needs no work."""

    ACK = "ack"  # the websocket's own messages (register acknowledgements)
    UNRELATED = "unrelated"  # an object type the bridge does not watch
    IRRELEVANT = "irrelevant"  # an update that cannot change a context (inventory ...)


#: What DRP calls a cluster: a cluster or a resource broker (both machines underneath).
AnyCluster = Cluster | ResourceBroker


@dataclass(frozen=True, slots=True)
class MachineChange:
    uuid: str
    machine: Machine | None  # None: deleted


@dataclass(frozen=True, slots=True)
class ContextChange:
    name: str
    context: Context | None  # None: deleted


@dataclass(frozen=True, slots=True)
class ClusterChange:
    kind: str  # clusters | resource_brokers
    uuid: str
    cluster: AnyCluster | None  # None: deleted


Change = MachineChange | ContextChange | ClusterChange


class BadInput:
    """Bad input from DRP: every one counted (``stats["malformed"]``), each key logged once."""

    def __init__(self, stats: Counter[str]) -> None:
        self.stats = stats
        self._logged: set[str] = set()

    def __call__(self, key: str, reason: str) -> None:
        self.stats["malformed"] += 1
        if key in self._logged:
            return
        if len(self._logged) >= LOGGED_KEYS_MAX:
            self._logged.clear()
        self._logged.add(key)
        log.warning("skipped bad input from DRP (%s): %s", key[:QUOTE_CHARS], reason)

    def object(self, exc: BadObject) -> None:
        self(exc.key, exc.reason)


def _quote(value: object) -> str:
    return repr(value)[:QUOTE_CHARS]


def parse_frame(text: str) -> Change | Drop:
    """Parse one websocket frame.

    Raises:
        BadObject: not JSON, not an event, an unknown action, an object of the wrong shape
            (the key names the frame's object, or the kind of problem when it has none).
    """
    if len(text) > MAX_EVENT_BYTES:
        raise BadObject("oversize", f"event of {len(text)} bytes is too large (skipped)")
    try:
        event = orjson.loads(text)
    except ValueError:  # orjson.JSONDecodeError is a ValueError
        raise BadObject("json", f"not JSON: {text[:QUOTE_CHARS]!r}") from None
    if not isinstance(event, dict):
        raise BadObject("shape", f"event is not a JSON object: {_quote(event)}")
    kind, action, key = event.get("Type"), event.get("Action"), event.get("Key")
    if kind == "websocket":
        return Drop.ACK
    if not isinstance(kind, str) or not isinstance(action, str) or not isinstance(key, str):
        raise BadObject("fields", f"event without Type/Action/Key: {sorted(event)[:8]}")
    if action not in ACTIONS:
        raise BadObject(f"action:{action[:QUOTE_CHARS]}", f"unknown action {action!r}")
    obj = event.get("Object")
    if kind in MACHINE_TYPES:
        return _machine(action, key, obj, event.get("Original"))
    if kind == "contexts":
        if action in DELETES:
            return ContextChange(key, None)
        return ContextChange(key, parse_context(obj, key))
    if kind in CLUSTER_TYPES:
        if action in DELETES:
            return ClusterChange(kind, key, None)
        cluster = parse_cluster(kind, obj, key)
        return ClusterChange(kind, cluster.uuid, cluster)
    return Drop.UNRELATED


def _machine(action: str, key: str, obj: Any, original: Any) -> MachineChange | Drop:
    if action in DELETES:
        return MachineChange(key, None)
    if not isinstance(obj, dict):
        raise BadObject(key, f"machine event without an object: {_quote(obj)}")
    if isinstance(original, dict) and not relevant_change(original, obj):
        return Drop.IRRELEVANT
    machine = slim_machine(obj, key)
    return MachineChange(machine.uuid, machine)


def slim_machine(obj: Any, key: str = "?", known: Mapping[str, Machine] | None = None) -> Machine:
    """A :class:`Machine` with only the fields the bridge needs (small in memory).

    Args:
        obj: DRP's machine JSON (from an event or a listing).
        key: what to call it in errors when it has no usable ``Uuid``.
        known: machines parsed before, by uuid; an equal one is returned as it is (a resync
            of unchanged machines builds no new objects).

    Raises:
        BadObject: not an object, no valid ``Uuid``, ``Context``, ``Params`` or ``Profiles``
            of the wrong type.
    """
    if not isinstance(obj, dict):
        raise BadObject(key, f"machine is not a JSON object: {_quote(obj)}")
    uuid = obj.get("Uuid")
    if not isinstance(uuid, str) or not 0 < len(uuid) <= 64:
        raise BadObject(key, f"machine without a valid Uuid: {_quote(uuid)}")
    params = obj.get("Params")
    if params is not None and not isinstance(params, dict):
        raise BadObject(uuid, f"Params must be an object, got {type(params).__name__}")
    context = obj.get("Context") or ""
    if not isinstance(context, str):
        raise BadObject(uuid, f"Context must be a string, got {type(context).__name__}")
    profiles = obj.get("Profiles") or []
    if not isinstance(profiles, list) or not all(isinstance(p, str) for p in profiles):
        raise BadObject(uuid, "Profiles must be a list of names")
    name = obj.get("Name")
    name = name if isinstance(name, str) else ""
    slim = {k: params[k] for k in SLIM_PARAMS if k in params} if params else {}
    before = known.get(uuid) if known is not None else None
    if (
        before is not None
        and before.context == context
        and before.params == slim
        and before.name == name
        and before.profiles == profiles
    ):
        return before
    return Machine(
        uuid=uuid,
        name=name,
        context=context,
        params=slim,
        profiles=profiles,
    )


def parse_context(obj: Any, key: str = "?") -> Context:
    """A DRP context.

    Raises:
        BadObject: wrong shape or field types.
    """
    try:
        return Context.model_validate(obj)
    except ValueError as exc:
        raise BadObject(key, f"context: {_errors(exc)}") from None


def parse_cluster(kind: str, obj: Any, key: str = "?") -> AnyCluster:
    """A DRP cluster (``kind`` clusters) or resource broker (``resource_brokers``).

    Raises:
        BadObject: wrong shape or field types.
    """
    try:
        if kind == "resource_brokers":
            return ResourceBroker.model_validate(obj)
        return Cluster.model_validate(obj)
    except ValueError as exc:
        uuid = obj.get("Uuid") if isinstance(obj, dict) else None
        raise BadObject(uuid if isinstance(uuid, str) else key, f"{kind}: {_errors(exc)}") from None


def _errors(exc: ValueError) -> str:
    """A short reason from a validation error (field locations only, never the values)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        fields = [".".join(str(p) for p in e.get("loc", ())) for e in errors()[:4]]
        return "invalid " + ", ".join(f or "object" for f in fields)
    return type(exc).__name__


__all__ = [
    "ACTIONS",
    "CLUSTER_TYPES",
    "DELETES",
    "MACHINE_TYPES",
    "MAX_EVENT_BYTES",
    "AnyCluster",
    "BadInput",
    "Change",
    "ClusterChange",
    "ContextChange",
    "Drop",
    "MachineChange",
    "parse_cluster",
    "parse_context",
    "parse_frame",
    "slim_machine",
]

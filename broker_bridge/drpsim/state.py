"""The simulator's objects (machines, clusters, resource brokers, contexts, profiles) and the
event fan-out every change goes through. Only ever touched on the simulator's event loop."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from broker_bridge.drpsim.patch import PatchError

MACHINE_KINDS = ("machines", "clusters", "resource_brokers")
DEFAULT_TOKEN = "sim-token"  # noqa: S105 - a test credential of the simulator
DEFAULT_USERS = {"rocketskates": "r0cketsk8ts"}
#: Param definitions the simulator knows (DRP answers 404 for undefined params).
PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "docker-context/owner": {"type": "string"},
    "docker-context/tag": {"type": "string"},
    "docker-context/tags": {"type": "array", "items": {"type": "string"}},
    "docker-context/error": {"type": "string"},
    "docker-context/member-name": {"type": "string"},
    "context-broker/owner": {"type": "string"},
    "context-broker/tag": {"type": "string"},
    "resource/broker": {"type": "string"},
    "cluster/count": {"type": "integer"},
    "cluster/machines": {"type": "array", "items": {"type": "string"}},
    "ctxpool/cluster": {"type": "string"},
    "ctxpool-agent/seen": {"type": "string"},
}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def server_info(port: int) -> dict[str, Any]:
    """DRP's ``Info`` object (it comes with every token), with the keys ``drppy-client`` needs."""
    return {
        "address": "127.0.0.1",
        "api_port": port,
        "arch": "amd64",
        "os": "linux",
        "version": "v4.14.0-sim",
        "id": "drpsim",
        "local_id": "drpsim",
        "uuid": "00000000-0000-4000-8000-00000000d59f",
        "manager": False,
        "ha_consensus_id": "",
        "ha_id": "",
        "ha_is_active": True,
        "ha_status": "Up",
        "file_port": 0,
        "secure_file_port": 0,
        "tftp_port": 0,
        "binl_port": 0,
        "dhcp_port": 0,
        "dns_port": 0,
        "prov_enabled": False,
        "secure_prov_enabled": False,
        "tftp_enabled": False,
        "binl_enabled": False,
        "dhcp_enabled": False,
        "dns_enabled": False,
        "features": ["sim"],
    }


def new_machine(
    name: str, context: str = "", params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A machine object with DRP's keys and defaults."""
    now = _now()
    return {
        "Uuid": str(uuidlib.uuid4()),
        "Name": name,
        "Description": "",
        "Context": context,
        "Meta": {"BaseContext": context} if context else {},
        "Params": dict(params or {}),
        "Profiles": [],
        "Runnable": True,
        "WorkOrderMode": False,
        "Available": True,
        "Errors": [],
        "ReadOnly": False,
        "Validated": True,
        "CreatedAt": now,
        "LastModifiedAt": now,
        "Address": "",
        "Arch": "amd64",
        "OS": "",
        "BootEnv": "local",
        "Stage": "none",
        "Workflow": "",
        "Tasks": [],
        "CurrentTask": 0,
    }


@dataclass
class Subscriber:
    """One websocket and the ``register`` patterns it asked for."""

    ws: web.WebSocketResponse
    patterns: list[tuple[set[str], set[str], set[str]]] = field(default_factory=list)

    def wants(self, type_: str, action: str, key: str) -> bool:
        """Whether an event of ``type_.action.key`` matches one of its patterns."""
        for types, actions, keys in self.patterns:
            if (
                ("*" in types or type_ in types)
                and ("*" in actions or action in actions)
                and ("*" in keys or key in keys)
            ):
                return True
        return False


class SimState:
    """Objects and subscribers. Not thread-safe: only the simulator's loop touches it."""

    def __init__(self, drop_share: float = 0.0, seed: int | None = None) -> None:
        self.drop_share = drop_share
        self.rng = random.Random(seed)
        self.objects: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in MACHINE_KINDS}
        self.contexts: dict[str, dict[str, Any]] = {}
        self.profiles: dict[str, dict[str, Any]] = {}  # name -> Params
        self.subscribers: list[Subscriber] = []
        #: Items a full listing returns before the real objects, verbatim (malformed-input
        #: tests: DRP content of the wrong shape).
        self.raw_listing: dict[str, list[Any]] = {k: [] for k in MACHINE_KINDS}
        self.events_sent = 0
        self.events_dropped = 0

    def aggregated(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` with its profiles' params merged under its own (DRP's ``aggregate=true``)."""
        merged: dict[str, Any] = {}
        for name in obj.get("Profiles") or []:
            merged.update(self.profiles.get(name, {}))
        merged.update(obj.get("Params") or {})
        return {**obj, "Params": merged}

    def find(self, kind: str, key: str) -> dict[str, Any]:
        """The object of ``kind`` with UUID ``key`` (or ``Name:<name>``, as DRP accepts).

        Raises:
            PatchError: 404 when there is none.
        """
        obj = self.objects[kind].get(key)
        if obj is None:
            name = key.removeprefix("Name:")
            obj = next((o for o in self.objects[kind].values() if o.get("Name") == name), None)
        if obj is None:
            raise PatchError(404, f"{kind} {key} not found")
        return obj

    def emit(self, kind: str, action: str, key: str, obj: Any, original: Any) -> None:
        """Send an event to every subscriber that registered for it (some dropped, if told)."""
        event = {
            "Time": _now(),
            "Type": kind,
            "Action": action,
            "Key": key,
            "Principal": "user:rocketskates",
            "Object": obj,
            "Original": original,
        }
        text: str | None = None
        for sub in list(self.subscribers):
            if not sub.wants(kind, action, key):
                continue
            if self.drop_share and self.rng.random() < self.drop_share:
                self.events_dropped += 1
                continue
            text = text or json.dumps(event)
            self.events_sent += 1
            task = asyncio.ensure_future(sub.ws.send_str(text))
            task.add_done_callback(lambda t: t.exception())

    async def store(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Add a new object and emit ``create``; returns a copy.

        Raises:
            PatchError: 409 when its UUID exists.
        """
        uuid = obj.setdefault("Uuid", str(uuidlib.uuid4()))
        if uuid in self.objects[kind]:
            raise PatchError(409, f"{kind} {uuid} already exists")
        obj.setdefault("Params", {})
        self.objects[kind][uuid] = obj
        self.emit(kind, "create", uuid, copy.deepcopy(obj), None)
        return copy.deepcopy(obj)

    def replace(self, kind: str, uuid: str, after: dict[str, Any], action: str) -> dict[str, Any]:
        """Replace an object and emit ``action`` with the before and after; returns a copy."""
        before = self.objects[kind][uuid]
        after["Uuid"] = uuid
        after["LastModifiedAt"] = _now()
        self.objects[kind][uuid] = after
        self.emit(kind, action, uuid, copy.deepcopy(after), copy.deepcopy(before))
        return copy.deepcopy(after)

    async def store_context(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a context and emit ``create`` or ``update``."""
        name = obj["Name"]
        before = self.contexts.get(name)
        self.contexts[name] = obj
        self.emit("contexts", "update" if before else "create", name, obj, before)
        return obj

    async def drop_context(self, name: str) -> dict[str, Any] | None:
        """Remove a context (emit ``delete``); returns it, or None when there was none."""
        obj = self.contexts.pop(name, None)
        if obj is not None:
            self.emit("contexts", "delete", name, obj, None)
        return obj

    async def close_all_ws(self) -> None:
        """Close every websocket (DRP does not reconnect them; clients must)."""
        for sub in list(self.subscribers):
            await sub.ws.close()
        self.subscribers.clear()

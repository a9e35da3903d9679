"""In-memory stand-ins for the bridge's two sides (no servers, no Redis): a fake DRP that the
bridge's client calls reach, and a sink that keeps desired state in a dict.

The fake DRP answers what the bridge asks of :class:`~pool.drp.client.DrpClient`
(contexts, paged lists with the member filter, machine tokens, single objects, create, delete,
params) and plays a scripted event stream. The sink records every write and every completed
resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import logging
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from broker_bridge.models import Context, Machine
from broker_bridge.translate import wanted
from pool.contexts.models import ContextSpec
from pool.drp.errors import DrpError, DrpNotFoundError

MEMBER = "ctxpool/cluster"


def fp(context: str, image: str, tag: str) -> str:
    return f"{context}|{image}|{tag}"


class FakeDrp:
    """The DRP side the bridge reads and writes, in memory.

    ``stream`` scripts the websocket: each call of :meth:`events` takes the next entry, an
    exception to raise or a list of frames to yield (then it waits until cancelled, like a
    quiet stream). ``junk_listing`` items are listed before the real machines, verbatim.
    """

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, dict[str, Any]]] = {
            "machines": {},
            "clusters": {},
            "resource_brokers": {},
        }
        self.contexts_raw: dict[str, dict[str, Any]] = {
            "runner": {"Name": "runner", "Engine": "docker-context", "Image": "img/runner:1"},
            "auditor": {"Name": "auditor", "Engine": "docker-context", "Image": "img/audit:1"},
            "foreign": {"Name": "foreign", "Engine": "other", "Image": "img/x:1"},
        }
        self.junk_listing: list[Any] = []
        self.page_size = 2
        self.failing_tokens: set[str] = set()
        self.token_calls = 0
        self.stream: list[BaseException | list[str]] = []
        self.registered_calls = 0
        self.list_calls = 0

    @property
    def machines(self) -> dict[str, dict[str, Any]]:
        return self.objects["machines"]

    def put_machine(
        self, name: str, context: str = "runner", params: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        uuid = str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, name))
        obj = {"Uuid": uuid, "Name": name, "Context": context, "Params": dict(params or {})}
        self.machines[uuid] = obj
        return copy.deepcopy(obj)

    def expected(self) -> dict[str, str]:
        """uuid -> fingerprint of every machine that wants a container."""
        contexts = {n: Context.model_validate(c) for n, c in self.contexts_raw.items()}
        out = {}
        for raw in self.machines.values():
            w = wanted(Machine.model_validate(raw), contexts)
            if w is not None:
                out[w.uuid] = fp(w.context, w.image, w.tag)
        return out

    # ---- what DrpClient offers ----------------------------------------------------------

    async def contexts(self) -> dict[str, Context]:
        return {n: Context.model_validate(c) for n, c in self.contexts_raw.items()}

    async def list_pages(
        self, kind: str, query: str = "", page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        self.list_calls += 1
        items: list[Any] = [copy.deepcopy(o) for o in self.objects[kind].values()]
        if kind == "machines" and f"{MEMBER}=Eq(" in query:
            cluster = query.split(f"{MEMBER}=Eq(", 1)[1].split(")", 1)[0]
            items = [o for o in items if o.get("Params", {}).get(MEMBER) == cluster]
        elif kind == "machines":
            items = list(self.junk_listing) + items
        size = min(page_size, self.page_size)
        for start in range(0, len(items), size):
            yield items[start : start + size]
            await asyncio.sleep(0)

    async def machine_token(self, uuid: str, ttl_s: int) -> str:
        self.token_calls += 1
        await asyncio.sleep(0)
        if uuid in self.failing_tokens:
            raise DrpError(f"DRP GET token of {uuid}: HTTP 500", 500)
        return f"tok-{uuid}"

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        parts = path.split("?", 1)[0].split("/")  # /api/v3/<kind>/<uuid>
        kind, uuid = parts[3], parts[4] if len(parts) > 4 else ""
        if method == "GET" and uuid in self.objects.get(kind, {}):
            return copy.deepcopy(self.objects[kind][uuid])
        raise DrpNotFoundError(f"DRP {method} {path}: not found", 404)

    async def create(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        made = {"Uuid": str(uuidlib.uuid4()), "Params": {}, **copy.deepcopy(obj)}
        self.objects[kind][made["Uuid"]] = made
        return copy.deepcopy(made)

    async def delete(self, kind: str, uuid: str) -> None:
        if self.objects[kind].pop(uuid, None) is None:
            raise DrpNotFoundError(f"{kind} {uuid} not found", 404)

    async def set_param(self, kind: str, uuid: str, key: str, value: Any) -> None:
        self.objects[kind][uuid].setdefault("Params", {})[key] = value

    async def events(
        self,
        registrations: Sequence[str] = (),
        heartbeat_s: float = 20.0,
        on_registered: Callable[[], None] | None = None,
        **_: Any,
    ) -> AsyncIterator[str]:
        step: BaseException | list[str] = self.stream.pop(0) if self.stream else []
        if isinstance(step, BaseException):
            raise step
        self.registered_calls += 1
        if on_registered is not None:
            on_registered()
        for text in step:
            yield text
        await asyncio.Event().wait()  # a quiet, open stream

    async def close(self) -> None:
        return None


def event(kind: str, action: str, key: str, obj: Any, original: Any = None) -> str:
    return json.dumps(
        {"Time": "t", "Type": kind, "Action": action, "Key": key, "Object": obj,
         "Original": original}
    )  # fmt: skip


@dataclass
class Row:
    present: bool
    fingerprint: str | None
    owner: str | None = None
    tag: str | None = None


class MemSink:
    """Desired state in a dict. Implements the bridge's sink (both the per-machine reads of
    the original bridge and the batched reads of the split one), records what it is told."""

    def __init__(self) -> None:
        self.desired: dict[str, Row] = {}
        self.writes = 0
        self.applied: list[tuple[str, str | None]] = []  # (uuid, preferred node)
        self.completed: list[float] = []
        self.epoch: str | None = None
        self.renudged: list[str] = []
        self.alive: set[str] = set()
        self.reads = 0

    def present(self) -> dict[str, str]:
        return {u: r.fingerprint for u, r in self.desired.items() if r.present and r.fingerprint}

    # ---- reads ---------------------------------------------------------------------------

    def current(self, uuid: str) -> tuple[bool, str | None] | None:
        self.reads += 1
        row = self.desired.get(uuid)
        return None if row is None else (row.present, row.fingerprint)

    def compare(self, expected: Sequence[tuple[str, Any]]) -> dict[str, Any]:
        from broker_bridge.sink import Stored, fingerprint

        self.reads += 1
        out: dict[str, Any] = {}
        for uuid, target in expected:
            row = self.desired.get(uuid)
            if row is None:
                if target is not None:
                    out[uuid] = None
                continue
            want = None if target is None else fingerprint(*target)
            if (row.fingerprint if row.present else None) != want:
                out[uuid] = Stored(row.present, row.fingerprint, row.tag, 1)
        return out

    def known_present(self) -> set[str]:
        return {u for u, r in self.desired.items() if r.present}

    def present_except(self, seen: set[str]) -> set[str]:
        return self.known_present() - seen

    def live_nodes(self, tag: str) -> dict[str, tuple[int, int]]:
        return {}

    # ---- writes --------------------------------------------------------------------------

    def apply(self, spec: ContextSpec, preferred: str | None = None) -> None:
        self.writes += 1
        self.applied.append((spec.uuid, preferred))
        owner = self.desired[spec.uuid].owner if spec.uuid in self.desired else None
        self.desired[spec.uuid] = Row(True, fp(spec.context, spec.image, spec.tag), owner, spec.tag)

    def remove(self, uuid: str) -> None:
        self.writes += 1
        self.desired[uuid] = Row(False, None)

    def write(
        self, applies: Sequence[tuple[ContextSpec, str | None]], removes: Sequence[str]
    ) -> None:
        for spec, preferred in applies:
            self.apply(spec, preferred)
        for uuid in removes:
            self.remove(uuid)

    def renudge_stalled(self) -> int:
        stalled = [u for u, r in self.desired.items()
                   if r.present and r.owner and r.owner not in self.alive]  # fmt: skip
        self.renudged += stalled
        return len(stalled)

    def begin_resync(self) -> tuple[str, bool]:
        if self.epoch is None:  # new, or "Redis lost its data"
            self.epoch = f"epoch-{len(self.completed)}"
            return self.epoch, True
        return self.epoch, False

    def resync_completed(self, epoch: str) -> bool:
        if epoch != self.epoch:
            return False
        self.completed.append(time.time())
        return True


class FlakySink:
    """A sink whose every call raises a raw Redis error while ``broken`` (Redis went away)."""

    def __init__(self, inner: MemSink) -> None:
        self.inner = inner
        self.broken = True
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                self.failures += 1
                raise redis.exceptions.ConnectionError("Error 111 connecting to redis. Refused.")
            return target(*args, **kwargs)

        return call


@contextlib.contextmanager
def quiet(logger: str = "broker_bridge", level: int = logging.ERROR) -> Iterator[None]:
    """Raise ``logger``'s level for a while (tests that feed junk on purpose), then restore."""
    log = logging.getLogger(logger)
    before = log.level
    log.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(before)


async def wait_until(probe: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Poll ``probe`` on the event loop until truthy; AssertionError on timeout."""
    for _ in itertools.count():
        if probe():
            return
        timeout_s -= 0.01
        if timeout_s < 0:
            raise AssertionError(f"timed out waiting for {probe}")
        await asyncio.sleep(0.01)

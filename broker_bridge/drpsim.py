"""A DRP simulator: the subset of DRP's API the bridge uses, over HTTP and a websocket, on
loopback. Same paths, same JSON keys, same auth schemes; it can drop a share of events (DRP
does under load) and cut every websocket (DRP does not reconnect them).

    sim = DrpSim(drop_share=0.3).start()          # serves on 127.0.0.1:<port> in a thread
    sim.put_context("runner", engine="docker-context", image="drp/agent:v4")
    m = sim.create_machine("m1", context="runner", params={"docker-context/tag": "ci"})
    ...
    sim.stop()

REST: ``/api/v3/{machines,clusters,resource_brokers}`` (list with ``offset``/``limit``,
``slim``, ``params``; get, create, PATCH with RFC 6902 incl. ``test``, PUT, delete;
``/params/<key>`` get/set/delete; ``/token``), ``/api/v3/contexts``, ``/api/v3/users/<u>/token``.
Websocket: ``/api/v3/ws`` with ``register <type>.<action>.<key>`` frames, each acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import random
import secrets
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

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
}


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


class PatchError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise PatchError(422, f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 ``add``/``replace``/``remove``/``test`` on a copy of ``doc``.

    Raises:
        PatchError: 409 when a ``test`` fails, 422 for a malformed patch.
    """
    out = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(422, f"bad patch operation {op!r}")
        parts = _pointer(op["path"])
        parent: Any = out
        for part in parts[:-1]:
            if not isinstance(parent, dict) or part not in parent:
                raise PatchError(422, f"path {op['path']} does not exist")
            parent = parent[part]
        last = parts[-1]
        if not isinstance(parent, dict):
            raise PatchError(422, f"path {op['path']} is not in an object")
        kind = op["op"]
        if kind == "test":
            if parent.get(last) != op.get("value"):
                raise PatchError(409, f"test failed at {op['path']}")
        elif kind in ("add", "replace"):
            if kind == "replace" and last not in parent:
                raise PatchError(422, f"replace: {op['path']} does not exist")
            parent[last] = op.get("value")
        elif kind == "remove":
            if last not in parent:
                raise PatchError(422, f"remove: {op['path']} does not exist")
            del parent[last]
        else:
            raise PatchError(422, f"unsupported op {kind!r}")
    return out


def new_machine(
    name: str, context: str = "", params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A machine object with DRP's keys and defaults."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
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
    ws: web.WebSocketResponse
    patterns: list[tuple[set[str], set[str], set[str]]] = field(default_factory=list)

    def wants(self, type_: str, action: str, key: str) -> bool:
        for types, actions, keys in self.patterns:
            if (
                ("*" in types or type_ in types)
                and ("*" in actions or action in actions)
                and ("*" in keys or key in keys)
            ):
                return True
        return False


class DrpSim:
    """The simulator. Thread-safe: its state is only touched on its own event loop."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        users: dict[str, str] | None = None,
        drop_share: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.token = token
        self.users = dict(DEFAULT_USERS if users is None else users)
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
        self.requests = 0
        #: Every request as it arrived: (method, path with query, Authorization header).
        self.seen: list[tuple[str, str, str]] = []
        self.fail_auth = False  # answer 401 to everything (tests of the bridge's backoff)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth_mw], client_max_size=64 * 1024 * 1024)
        r = app.router
        r.add_get("/api/v3/ws", self._ws)
        r.add_get("/api/v3/users/{user}/token", self._user_token)
        r.add_get("/api/v3/params/{name:.+}", self._param_def)
        r.add_get("/api/v3/contexts", self._list_contexts)
        r.add_get("/api/v3/contexts/{name}", self._get_context)
        r.add_post("/api/v3/contexts", self._put_context_h)
        r.add_put("/api/v3/contexts/{name}", self._put_context_h)
        r.add_delete("/api/v3/contexts/{name}", self._delete_context_h)
        for kind in MACHINE_KINDS:
            base = f"/api/v3/{kind}"
            r.add_get(base, self._list(kind))
            r.add_post(base, self._create(kind))
            r.add_get(base + "/{uuid}", self._get(kind))
            r.add_put(base + "/{uuid}", self._put(kind))
            r.add_patch(base + "/{uuid}", self._patch(kind))
            r.add_delete(base + "/{uuid}", self._delete(kind))
            r.add_get(base + "/{uuid}/token", self._machine_token(kind))
            r.add_get(base + "/{uuid}/params/{key:.+}", self._get_param(kind))
            r.add_post(base + "/{uuid}/params/{key:.+}", self._set_param(kind))
            r.add_delete(base + "/{uuid}/params/{key:.+}", self._delete_param(kind))
        return app

    def start(self) -> DrpSim:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._runner = web.AppRunner(self.app(), access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            server: Any = site._server
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="drpsim", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("DRP simulator did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self.call(self._close_all_ws())
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> DrpSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the simulator's loop from another thread; return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # ---- direct manipulation (tests) ---------------------------------------------------------

    def put_context(self, name: str, engine: str = "docker-context", image: str = "") -> None:
        obj = {"Name": name, "Engine": engine, "Image": image, "Meta": {}, "Description": ""}
        self.call(self._store_context(obj))

    def put_profile(self, name: str, params: dict[str, Any]) -> None:
        """A profile whose params machines listing it inherit (``aggregate=true``)."""

        async def do() -> None:
            self.profiles[name] = dict(params)

        self.call(do())

    def aggregated(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``obj`` with its profiles' params merged under its own (DRP's ``aggregate=true``)."""
        merged: dict[str, Any] = {}
        for name in obj.get("Profiles") or []:
            merged.update(self.profiles.get(name, {}))
        merged.update(obj.get("Params") or {})
        return {**obj, "Params": merged}

    def delete_context(self, name: str) -> None:
        self.call(self._drop_context(name))

    def create_machine(
        self,
        name: str,
        context: str = "",
        params: dict[str, Any] | None = None,
        kind: str = "machines",
    ) -> dict[str, Any]:
        obj: dict[str, Any] = self.call(self._store(kind, new_machine(name, context, params)))
        return obj

    def update_machine(self, uuid: str, kind: str = "machines", **changes: Any) -> dict[str, Any]:
        """Replace top-level fields (``Context=``, ``Params=``) and emit ``update``."""

        async def do() -> dict[str, Any]:
            before = self.objects[kind][uuid]
            after = copy.deepcopy(before)
            after.update(changes)
            return self._replace(kind, uuid, after, "update")

        result: dict[str, Any] = self.call(do())
        return result

    def set_param(self, uuid: str, key: str, value: Any, kind: str = "machines") -> None:
        async def do() -> None:
            after = copy.deepcopy(self.objects[kind][uuid])
            after["Params"][key] = value
            self._replace(kind, uuid, after, "save")

        self.call(do())

    def delete_machine(self, uuid: str, kind: str = "machines") -> None:
        async def do() -> None:
            obj = self.objects[kind].pop(uuid, None)
            if obj is not None:
                self._emit(kind, "delete", uuid, obj, None)

        self.call(do())

    def get(self, uuid: str, kind: str = "machines") -> dict[str, Any] | None:
        async def do() -> dict[str, Any] | None:
            obj = self.objects[kind].get(uuid)
            return copy.deepcopy(obj) if obj else None

        result: dict[str, Any] | None = self.call(do())
        return result

    def list(self, kind: str = "machines") -> list[dict[str, Any]]:
        async def do() -> list[dict[str, Any]]:
            return [copy.deepcopy(o) for o in self.objects[kind].values()]

        result: list[dict[str, Any]] = self.call(do())
        return result

    def cut_websockets(self) -> None:
        """Close every websocket (the bridge must reconnect and resync)."""
        self.call(self._close_all_ws())

    def emit_raw(self, text: str) -> None:
        """Send a raw text frame to every subscriber (malformed-event tests)."""

        async def do() -> None:
            for sub in list(self.subscribers):
                with contextlib.suppress(ConnectionError):  # a subscriber closing meanwhile
                    await sub.ws.send_str(text)

        self.call(do())

    def list_raw(self, kind: str, *items: Any) -> None:
        """Make every full listing of ``kind`` start with ``items``, verbatim (any JSON value:
        objects of the wrong shape, non-objects). Filtered listings do not return them."""

        async def do() -> None:
            self.raw_listing[kind].extend(items)

        self.call(do())

    # ---- internals ---------------------------------------------------------------------------

    async def _close_all_ws(self) -> None:
        for sub in list(self.subscribers):
            await sub.ws.close()
        self.subscribers.clear()

    def _emit(self, kind: str, action: str, key: str, obj: Any, original: Any) -> None:
        event = {
            "Time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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

    async def _store(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        uuid = obj.setdefault("Uuid", str(uuidlib.uuid4()))
        if uuid in self.objects[kind]:
            raise PatchError(409, f"{kind} {uuid} already exists")
        obj.setdefault("Params", {})
        self.objects[kind][uuid] = obj
        self._emit(kind, "create", uuid, copy.deepcopy(obj), None)
        return copy.deepcopy(obj)

    def _replace(self, kind: str, uuid: str, after: dict[str, Any], action: str) -> dict[str, Any]:
        before = self.objects[kind][uuid]
        after["Uuid"] = uuid
        after["LastModifiedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.objects[kind][uuid] = after
        self._emit(kind, action, uuid, copy.deepcopy(after), copy.deepcopy(before))
        return copy.deepcopy(after)

    async def _store_context(self, obj: dict[str, Any]) -> dict[str, Any]:
        name = obj["Name"]
        before = self.contexts.get(name)
        self.contexts[name] = obj
        self._emit("contexts", "update" if before else "create", name, obj, before)
        return obj

    async def _drop_context(self, name: str) -> dict[str, Any] | None:
        obj = self.contexts.pop(name, None)
        if obj is not None:
            self._emit("contexts", "delete", name, obj, None)
        return obj

    # ---- auth --------------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> str | None:
        """The principal, or None. Bearer token, Basic user:password, or ``?token=``."""
        if self.fail_auth:
            return None
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return "token" if header[7:] == self.token else None
        if header.startswith("Basic "):
            import base64

            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except ValueError:
                return None
            return user if self.users.get(user) == password else None
        if request.query.get("token") == self.token:
            return "token"
        return None

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        self.seen.append(
            (request.method, request.path_qs, request.headers.get("Authorization", ""))
        )
        principal = self._authorized(request)
        if principal is None:
            return web.json_response(
                {"Model": "", "Type": "API_ERROR", "Code": 401, "Messages": ["Unauthorized"]},
                status=401,
            )
        try:
            response: web.StreamResponse = await handler(request)
        except PatchError as exc:
            return _error(exc.status, str(exc))
        return response

    # ---- handlers ----------------------------------------------------------------------------

    async def _user_token(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        principal = self._authorized(request)
        if principal not in (user, "token"):
            return _error(403, "forbidden")
        return web.json_response({"Token": self.token, "Info": server_info(self.port)})

    async def _param_def(self, request: web.Request) -> web.Response:
        name = unquote(request.match_info["name"])
        schema = PARAM_SCHEMAS.get(name)
        if schema is None:
            return _error(404, f"param {name} not found")
        body = {"Name": name, "Description": "", "Documentation": "", "Schema": schema}
        return web.json_response({**body, "Secure": False, "ReadOnly": True, "Available": True})

    async def _list_contexts(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.contexts.values()))

    async def _get_context(self, request: web.Request) -> web.Response:
        obj = self.contexts.get(request.match_info["name"])
        return web.json_response(obj) if obj else _error(404, "no such context")

    async def _put_context_h(self, request: web.Request) -> web.Response:
        obj = await request.json()
        if not isinstance(obj, dict) or not obj.get("Name"):
            return _error(422, "a context needs a Name")
        return web.json_response(await self._store_context(obj))

    async def _delete_context_h(self, request: web.Request) -> web.Response:
        obj = await self._drop_context(request.match_info["name"])
        return web.json_response(obj) if obj else _error(404, "no such context")

    def _list(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            q = request.query
            items = sorted(self.objects[kind].values(), key=lambda o: o["Uuid"])
            raw = self.raw_listing[kind]
            for qk, qv in q.items():
                if qk in ("offset", "limit", "slim", "params", "aggregate"):
                    continue
                raw = []
                if qv == "Ne()":
                    items = [o for o in items if o.get(qk) or o["Params"].get(qk)]
                    continue
                want = qv[3:-1] if qv.startswith("Eq(") and qv.endswith(")") else qv
                items = [o for o in items if str(o["Params"].get(qk, o.get(qk, ""))) == want]
            if q.get("aggregate") == "true":
                items = [self.aggregated(o) for o in items]
            items = raw + items
            total = len(items)
            offset, limit = int(q.get("offset", 0)), int(q.get("limit", 0) or 0)
            items = items[offset : offset + limit] if limit else items[offset:]
            slim = {s.strip() for s in q.get("slim", "").split(",") if s.strip()}
            wanted = [p for p in q.get("params", "").split(",") if p]
            out = []
            for obj in items:
                if not isinstance(obj, dict) or not isinstance(obj.get("Params"), dict):
                    out.append(obj)  # a raw item: as it is
                    continue
                view = {k: v for k, v in obj.items() if k not in slim or k == "Params"}
                if "Params" in slim:
                    view["Params"] = {k: obj["Params"][k] for k in wanted if k in obj["Params"]}
                out.append(view)
            return web.json_response(out, headers={"X-DRP-LIST-TOTAL-COUNT": str(total)})

        return handler

    def _find(self, kind: str, request: web.Request) -> dict[str, Any]:
        key = request.match_info["uuid"]
        obj = self.objects[kind].get(key)
        if obj is None:  # DRP also accepts Name:<name> keys
            name = key.removeprefix("Name:")
            obj = next((o for o in self.objects[kind].values() if o.get("Name") == name), None)
        if obj is None:
            raise PatchError(404, f"{kind} {key} not found")
        return obj

    def _create(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body = await request.json()
            if not isinstance(body, dict) or not body.get("Name"):
                return _error(422, "needs a Name")
            obj = new_machine(body["Name"], body.get("Context", ""), body.get("Params"))
            obj.update({k: v for k, v in body.items() if k != "Params"})
            return web.json_response(await self._store(kind, obj), status=201)

        return handler

    def _get(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            if request.query.get("aggregate") == "true":
                obj = self.aggregated(obj)
            return web.json_response(obj)

        return handler

    def _put(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            body = await request.json()
            if not isinstance(body, dict):
                return _error(422, "body must be an object")
            return web.json_response(self._replace(kind, obj["Uuid"], body, "update"))

        return handler

    def _patch(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            ops = await request.json()
            if not isinstance(ops, list):
                return _error(422, "a JSON patch is a list")
            after = apply_patch(obj, ops)
            return web.json_response(self._replace(kind, obj["Uuid"], after, "update"))

        return handler

    def _delete(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            del self.objects[kind][obj["Uuid"]]
            self._emit(kind, "delete", obj["Uuid"], obj, None)
            return web.json_response(obj)

        return handler

    def _machine_token(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            return web.json_response(
                {
                    "Token": f"mt-{obj['Uuid'][:8]}-{secrets.token_hex(8)}",
                    "Info": server_info(self.port),
                }
            )

        return handler

    def _get_param(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            return web.json_response(obj["Params"].get(unquote(request.match_info["key"])))

        return handler

    def _set_param(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            value = await request.json()
            after = copy.deepcopy(obj)
            after["Params"][unquote(request.match_info["key"])] = value
            self._replace(kind, obj["Uuid"], after, "save")
            return web.json_response(value)

        return handler

    def _delete_param(self, kind: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            key = unquote(request.match_info["key"])
            after = copy.deepcopy(obj)
            value = after["Params"].pop(key, None)
            self._replace(kind, obj["Uuid"], after, "save")
            return web.json_response(value)

        return handler

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=10)
        await ws.prepare(request)
        sub = Subscriber(ws)
        self.subscribers.append(sub)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                verb, _, spec = msg.data.strip().partition(" ")
                parts = spec.split(".")
                if verb not in ("register", "deregister") or len(parts) != 3:
                    await ws.send_str(
                        json.dumps(
                            {
                                "Type": "websocket",
                                "Action": "error",
                                "Key": msg.data,
                                "Object": "bad request",
                            }
                        )
                    )
                    continue
                pattern = (
                    set(parts[0].split(",")),
                    set(parts[1].split(",")),
                    set(parts[2].split(",")),
                )
                if verb == "register":
                    sub.patterns.append(pattern)
                else:
                    sub.patterns = [p for p in sub.patterns if p != pattern]
                await ws.send_str(
                    json.dumps({"Type": "websocket", "Action": verb, "Key": spec, "Object": "ok"})
                )
        finally:
            if sub in self.subscribers:
                self.subscribers.remove(sub)
        return ws


def _error(status: int, message: str) -> web.Response:
    return web.json_response(
        {"Model": "", "Type": "API_ERROR", "Code": status, "Messages": [message]}, status=status
    )

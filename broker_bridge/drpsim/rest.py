"""DRP's REST routes for objects: ``/api/v3/{machines,clusters,resource_brokers}`` (list with
``offset``/``limit``, ``slim``, ``params``, ``aggregate`` and field filters; get, create, PATCH
with RFC 6902 incl. ``test``, PUT, delete; ``/params/<key>`` get/set/delete; ``/token``),
``/api/v3/contexts`` and ``/api/v3/params/<name>`` (the simulator itself serves
``/api/v3/users/<user>/token``)."""

from __future__ import annotations

import copy
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from broker_bridge.drpsim.auth import DEFAULT_MACHINE_TOKEN_TTL_S, TokenBook
from broker_bridge.drpsim.patch import apply_patch
from broker_bridge.drpsim.state import (
    MACHINE_KINDS,
    PARAM_SCHEMAS,
    SimState,
    new_machine,
    server_info,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: The request key the auth middleware stores the caller's principal under.
PRINCIPAL = web.RequestKey("drpsim.principal", str)


def error(status: int, message: str) -> web.Response:
    """DRP's error reply."""
    return web.json_response(
        {"Model": "", "Type": "API_ERROR", "Code": status, "Messages": [message]}, status=status
    )


class RestApi:
    """The object routes over one :class:`SimState`."""

    def __init__(self, state: SimState, tokens: TokenBook, port: Callable[[], int]) -> None:
        self.state = state
        self.tokens = tokens
        self._port = port

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register every route of this module on ``router``."""
        r = router
        r.add_get("/api/v3/params/{name:.+}", self._param_def)
        r.add_get("/api/v3/contexts", self._list_contexts)
        r.add_get("/api/v3/contexts/{name}", self._get_context)
        r.add_post("/api/v3/contexts", self._put_context)
        r.add_put("/api/v3/contexts/{name}", self._put_context)
        r.add_delete("/api/v3/contexts/{name}", self._delete_context)
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

    # ---- users, params, contexts -------------------------------------------------------------

    async def _param_def(self, request: web.Request) -> web.Response:
        name = unquote(request.match_info["name"])
        schema = PARAM_SCHEMAS.get(name)
        if schema is None:
            return error(404, f"param {name} not found")
        body = {"Name": name, "Description": "", "Documentation": "", "Schema": schema}
        return web.json_response({**body, "Secure": False, "ReadOnly": True, "Available": True})

    async def _list_contexts(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.state.contexts.values()))

    async def _get_context(self, request: web.Request) -> web.Response:
        obj = self.state.contexts.get(request.match_info["name"])
        return web.json_response(obj) if obj else error(404, "no such context")

    async def _put_context(self, request: web.Request) -> web.Response:
        obj = await request.json()
        if not isinstance(obj, dict) or not obj.get("Name"):
            return error(422, "a context needs a Name")
        return web.json_response(await self.state.store_context(obj))

    async def _delete_context(self, request: web.Request) -> web.Response:
        obj = await self.state.drop_context(request.match_info["name"])
        return web.json_response(obj) if obj else error(404, "no such context")

    # ---- machines, clusters, resource brokers ------------------------------------------------

    def _list(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            q = request.query
            items = sorted(self.state.objects[kind].values(), key=lambda o: o["Uuid"])
            raw = self.state.raw_listing[kind]
            for qk, qv in q.items():
                if qk in ("offset", "limit", "slim", "params", "aggregate"):
                    continue
                raw = []
                if qv == "Ne()":
                    items = [o for o in items if o.get(qk) or o["Params"].get(qk)]
                    continue
                if qv.startswith("Re(") and qv.endswith(")"):  # DRP's regular-expression filter
                    rx = re.compile(qv[3:-1])
                    items = [o for o in items if rx.search(str(o["Params"].get(qk, o.get(qk, ""))))]
                    continue
                want = qv[3:-1] if qv.startswith("Eq(") and qv.endswith(")") else qv
                items = [o for o in items if str(o["Params"].get(qk, o.get(qk, ""))) == want]
            if q.get("aggregate") == "true":
                items = [self.state.aggregated(o) for o in items]
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
        return self.state.find(kind, request.match_info["uuid"])

    def _create(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            body = await request.json()
            if not isinstance(body, dict) or not body.get("Name"):
                return error(422, "needs a Name")
            obj = new_machine(body["Name"], body.get("Context", ""), body.get("Params"))
            obj.update({k: v for k, v in body.items() if k != "Params"})
            return web.json_response(await self.state.store(kind, obj), status=201)

        return handler

    def _get(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            if request.query.get("aggregate") == "true":
                obj = self.state.aggregated(obj)
            return web.json_response(obj)

        return handler

    def _put(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            body = await request.json()
            if not isinstance(body, dict):
                return error(422, "body must be an object")
            return web.json_response(self.state.replace(kind, obj["Uuid"], body, "update"))

        return handler

    def _patch(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            ops = await request.json()
            if not isinstance(ops, list):
                return error(422, "a JSON patch is a list")
            after = apply_patch(obj, ops)
            return web.json_response(self.state.replace(kind, obj["Uuid"], after, "update"))

        return handler

    def _delete(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            del self.state.objects[kind][obj["Uuid"]]
            self.state.emit(kind, "delete", obj["Uuid"], obj, None)
            return web.json_response(obj)

        return handler

    def _machine_token(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            try:
                ttl_s = int(request.query.get("ttl") or DEFAULT_MACHINE_TOKEN_TTL_S)
                token = self.tokens.issue_machine_token(kind, obj["Uuid"], ttl_s)
            except ValueError as exc:
                return error(422, f"bad ttl: {exc}")
            return web.json_response({"Token": token, "Info": server_info(self._port())})

        return handler

    def _get_param(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            return web.json_response(obj["Params"].get(unquote(request.match_info["key"])))

        return handler

    def _set_param(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            value = await request.json()
            after = copy.deepcopy(obj)
            after["Params"][unquote(request.match_info["key"])] = value
            self.state.replace(kind, obj["Uuid"], after, "save")
            return web.json_response(value)

        return handler

    def _delete_param(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            obj = self._find(kind, request)
            key = unquote(request.match_info["key"])
            after = copy.deepcopy(obj)
            value = after["Params"].pop(key, None)
            self.state.replace(kind, obj["Uuid"], after, "save")
            return web.json_response(value)

        return handler

"""DRP's event websocket: ``GET /api/v3/ws``; text frames ``register <type>.<action>.<key>``
and ``deregister ...`` (each part ``*`` or a comma list), each acknowledged with one message."""

from __future__ import annotations

import json

from aiohttp import WSMsgType, web

from broker_bridge.drpsim.state import SimState, Subscriber


def add_routes(router: web.UrlDispatcher, state: SimState) -> None:
    """Register the websocket route; its subscribers join ``state.subscribers``."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=10)
        await ws.prepare(request)
        sub = Subscriber(ws)
        state.subscribers.append(sub)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(_handle(sub, msg.data))
        finally:
            if sub in state.subscribers:
                state.subscribers.remove(sub)
        return ws

    router.add_get("/api/v3/ws", handler)


def _handle(sub: Subscriber, text: str) -> str:
    """Apply one frame to ``sub``; returns the reply frame."""
    verb, _, spec = text.strip().partition(" ")
    parts = spec.split(".")
    if verb not in ("register", "deregister") or len(parts) != 3:
        return json.dumps(
            {"Type": "websocket", "Action": "error", "Key": text, "Object": "bad request"}
        )
    pattern = (set(parts[0].split(",")), set(parts[1].split(",")), set(parts[2].split(",")))
    if verb == "register":
        sub.patterns.append(pattern)
    else:
        sub.patterns = [p for p in sub.patterns if p != pattern]
    return json.dumps({"Type": "websocket", "Action": verb, "Key": spec, "Object": "ok"})

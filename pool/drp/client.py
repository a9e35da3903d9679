"""DRP's REST API and websocket event stream (asyncio, aiohttp), used by the bridge.

Auth, errors and paths come from the core (:mod:`pool.drp.auth`, :mod:`~pool.drp.errors`,
:mod:`~pool.drp.paths`), the same as the nodes' synchronous token source: every call sends
``Authorization: Bearer``; with a user and password the client fetches a user token and renews
it at 80% of its TTL and once after a 401. TLS is verified by default, optionally against a CA
bundle; an ``http://`` URL works for development, with a warning. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp

from pool.drp import paths
from pool.drp.auth import TokenState, bearer_header, renews_after, token_from_reply
from pool.drp.config import DrpConfig
from pool.drp.errors import (
    DrpAuthError,
    DrpError,
    DrpFrameTooLargeError,
    DrpUnavailableError,
    error_for_status,
)
from pool.drp.models import Context

log = logging.getLogger(__name__)

#: What the bridge registers for on the websocket.
REGISTRATIONS = ("machines.*.*", "clusters.*.*", "resource_brokers.*.*", "contexts.*.*")


class DrpClient:
    """One DRP endpoint. Create inside a running event loop; ``await close()`` at the end."""

    def __init__(self, config: DrpConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        if config.plain_http:
            log.warning("DRP URL %s is plain http: development only", config.url)
        self._session = session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            connector=aiohttp.TCPConnector(ssl=config.ssl_context(), limit=32),
        )
        self._tokens = TokenState(config)
        self._token_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._session.close()

    # ---- auth -----------------------------------------------------------------------------

    async def _bearer(self) -> str:
        async with self._token_lock:
            return self._tokens.current() or await self._fetch_user_token()

    async def _renewed(self, refused: str) -> str | None:
        """A new token after DRP refused ``refused`` with 401; ``None`` for a configured one."""
        async with self._token_lock:
            if not self._tokens.refused(refused):
                return None
            return self._tokens.current() or await self._fetch_user_token()

    async def _fetch_user_token(self) -> str:
        path, headers = self._tokens.fetch_call()
        return self._tokens.accept(await self._send("GET", path, headers))

    # ---- transport ------------------------------------------------------------------------

    async def _send(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        hdrs = {**headers, "Accept": "application/json"}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method, self.config.url + path, data=data, headers=hdrs
            ) as resp:
                text = await resp.text()
                error = error_for_status(resp.status, method, path, text)
                if error is not None:
                    raise error
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DrpUnavailableError(f"DRP {method} {path}: {type(exc).__name__}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise DrpError(f"DRP {method} {path}: response is not JSON") from exc

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``path`` (``/api/v3/...``) with a token; renews a user token once on 401.

        Raises:
            DrpAuthError, DrpNotFoundError, DrpUnavailableError, DrpError.
        """
        token = await self._bearer()
        try:
            return await self._send(method, path, {"Authorization": bearer_header(token)}, body)
        except DrpAuthError as exc:
            fresh = await self._renewed(token) if renews_after(exc.status) else None
            if fresh is None:
                raise
            log.info("DRP refused the user token (HTTP 401): renewed it, trying once more")
            return await self._send(method, path, {"Authorization": bearer_header(fresh)}, body)

    # ---- API ------------------------------------------------------------------------------

    async def list_pages(
        self, kind: str, query: str = "", page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """``GET /api/v3/<kind>`` page by page (``offset``/``limit``).

        Raises:
            DrpError: a call failed, or a page is not a JSON list.
        """
        offset = 0
        while True:
            page = await self.request("GET", paths.page(kind, query, offset, page_size))
            if not isinstance(page, list):
                raise DrpError(f"DRP list of {kind} is not a JSON list")
            yield page
            if len(page) < page_size:
                return
            offset += page_size

    async def contexts(self) -> dict[str, Context]:
        """Every DRP context by name (malformed ones are logged and skipped).

        Raises:
            DrpError: the call failed.
        """
        raw = await self.request("GET", paths.collection("contexts"))
        out = {}
        for item in raw if isinstance(raw, list) else []:
            try:
                ctx = Context.model_validate(item)
            except ValueError as exc:
                log.warning("skipped a malformed DRP context: %s", exc)
                continue
            out[ctx.name] = ctx
        return out

    async def machine_token(self, uuid: str, ttl_s: int) -> str:
        """A token for the agent in a machine's context container (``RS_TOKEN``).

        Raises:
            DrpNotFoundError: no such machine.
            DrpError: the call failed or returned no token.
        """
        data = await self.request("GET", paths.object_token("machines", uuid, ttl_s))
        try:
            return token_from_reply(data, f"machine {uuid}")
        except DrpAuthError as exc:
            raise DrpError(str(exc)) from None

    async def create(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        """``POST /api/v3/<kind>``; returns the created object.

        Raises:
            DrpError: the call failed.
        """
        out: dict[str, Any] = await self.request("POST", paths.collection(kind), obj)
        return out

    async def delete(self, kind: str, uuid: str) -> None:
        """``DELETE /api/v3/<kind>/<uuid>``.

        Raises:
            DrpNotFoundError: no such object.
            DrpError: the call failed.
        """
        await self.request("DELETE", paths.obj(kind, uuid))

    async def set_param(self, kind: str, uuid: str, key: str, value: Any) -> None:
        """``POST /api/v3/<kind>/<uuid>/params/<key>``.

        Raises:
            DrpError: the call failed.
        """
        await self.request("POST", paths.param(kind, uuid, key), value)

    async def patch(self, kind: str, uuid: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        """``PATCH /api/v3/<kind>/<uuid>`` with RFC 6902 ``ops``; returns the object after.

        Raises:
            DrpError: the call failed (409 when a ``test`` op did not hold).
        """
        out: dict[str, Any] = await self.request("PATCH", paths.obj(kind, uuid), ops)
        return out

    # ---- websocket ------------------------------------------------------------------------

    async def events(
        self,
        registrations: Sequence[str] = REGISTRATIONS,
        heartbeat_s: float = 20.0,
        on_registered: Callable[[], None] | None = None,
        max_msg_size: int = 64 * 1024 * 1024,
    ) -> AsyncIterator[str]:
        """Connect, register, wait for every acknowledgement, then yield raw event frames.

        Ends (returns) when DRP closes the stream; the caller reconnects and resyncs. A user
        token DRP refuses at the upgrade is renewed once.

        Raises:
            DrpAuthError, DrpUnavailableError: the connection failed or broke.
            DrpFrameTooLargeError: a frame over ``max_msg_size`` bytes broke the connection.
        """
        token = await self._bearer()
        try:
            ws = await self._connect(token, heartbeat_s, max_msg_size)
        except DrpAuthError as exc:
            fresh = await self._renewed(token) if renews_after(exc.status) else None
            if fresh is None:
                raise
            ws = await self._connect(fresh, heartbeat_s, max_msg_size)
        async with ws:
            try:
                for reg in registrations:
                    await ws.send_str(f"register {reg}")
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                raise DrpUnavailableError(f"DRP websocket: register: {exc}") from exc
            acks = 0
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    if msg.type == aiohttp.WSMsgType.ERROR:
                        raise _ws_error(msg.data, max_msg_size)
                    if msg.type == aiohttp.WSMsgType.CLOSED:
                        break
                    continue
                if acks < len(registrations) and '"websocket"' in msg.data:
                    acks += 1
                    if acks == len(registrations):
                        log.info("DRP websocket registered: %s", ", ".join(registrations))
                        if on_registered is not None:
                            on_registered()
                    continue
                yield msg.data

    async def _connect(
        self, token: str, heartbeat_s: float, max_msg_size: int
    ) -> aiohttp.ClientWebSocketResponse:
        ws_url = self.config.url.replace("http", "ws", 1) + paths.WEBSOCKET
        try:
            return await self._session.ws_connect(
                ws_url,
                headers={"Authorization": bearer_header(token)},
                heartbeat=heartbeat_s,
                max_msg_size=max_msg_size,
            )
        except aiohttp.WSServerHandshakeError as exc:
            error = error_for_status(exc.status, "GET", paths.WEBSOCKET)
            raise (error or DrpUnavailableError(f"DRP websocket: {exc}")) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DrpUnavailableError(f"DRP websocket: {type(exc).__name__}: {exc}") from exc


def _ws_error(exc: object, max_msg_size: int) -> DrpError:
    """The error for a failed websocket read (a frame over the limit, a protocol error)."""
    if getattr(exc, "code", None) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
        return DrpFrameTooLargeError(
            f"DRP websocket: an event frame too large (over {max_msg_size} bytes)"
        )
    return DrpUnavailableError(f"DRP websocket: {type(exc).__name__}: {exc}")

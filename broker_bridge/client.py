"""DRP's REST API and websocket event stream (asyncio, aiohttp).

Auth by token (``Authorization: Bearer``) or user/password: the client fetches a user token
(``GET /api/v3/users/<user>/token?ttl=``) with Basic auth and renews it before it expires (and
once more on a 401). TLS is verified by default, optionally against a CA bundle; an ``http://``
URL works for development, with a warning. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from broker_bridge.models import Context
from pool.errors import CtxpoolError
from pool.settings import Settings

log = logging.getLogger(__name__)

#: What the bridge registers for on the websocket.
REGISTRATIONS = ("machines.*.*", "clusters.*.*", "resource_brokers.*.*", "contexts.*.*")
USER_TOKEN_TTL_S = 3600


class DrpError(CtxpoolError):
    """A DRP call failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DrpAuthError(DrpError):
    """401/403: the credentials are wrong or lack rights (not retried in a tight loop)."""


class DrpUnavailableError(DrpError):
    """DRP cannot be reached, or answered 5xx."""


class DrpNotFoundError(DrpError):
    """404: no such object."""


class DrpFrameTooLargeError(DrpUnavailableError):
    """DRP sent a websocket frame over the client's limit: the connection cannot go on."""


@dataclass(frozen=True, slots=True)
class DrpConfig:
    url: str
    token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_bundle: str | None = None
    verify_tls: bool = True
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DrpConfig:
        """Raises: DrpError when the URL or credentials are missing."""
        if not settings.drp_url:
            raise DrpError("CTXPOOL_DRP_URL is not set")
        token = settings.drp_token.get_secret_value() if settings.drp_token else None
        password = settings.drp_password.get_secret_value() if settings.drp_password else None
        if not token and not (settings.drp_username and password):
            raise DrpError("set CTXPOOL_DRP_TOKEN or CTXPOOL_DRP_USERNAME/CTXPOOL_DRP_PASSWORD")
        return cls(
            url=settings.drp_url.rstrip("/"),
            token=token,
            username=settings.drp_username,
            password=password,
            ca_bundle=settings.drp_ca_bundle,
            verify_tls=settings.drp_verify_tls,
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.url.startswith("https://"):
            return True  # unused for http://
        if not self.verify_tls:
            log.warning("DRP TLS verification is off (CTXPOOL_DRP_VERIFY_TLS=false)")
            return False
        return ssl.create_default_context(cafile=self.ca_bundle)


def _seg(part: str) -> str:
    return quote(part, safe="")


class DrpClient:
    """One DRP endpoint. Create inside a running event loop; ``await close()`` at the end."""

    def __init__(self, config: DrpConfig, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        if config.url.startswith("http://"):
            log.warning("DRP URL %s is plain http: development only", config.url)
        self._session = session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            connector=aiohttp.TCPConnector(ssl=config.ssl_context(), limit=32),
        )
        self._token = config.token
        self._token_expires = float("inf") if config.token else 0.0
        self._token_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._session.close()

    # ---- auth -----------------------------------------------------------------------------

    def _basic(self) -> str:
        raw = f"{self.config.username}:{self.config.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def _bearer(self, renew: bool = False) -> str:
        async with self._token_lock:
            stale = renew or self._token is None or time.monotonic() > self._token_expires
            if stale and self.config.username and self.config.password:
                await self._fetch_user_token()
            if self._token is None:
                raise DrpAuthError("no DRP credentials (token or user/password)")
            return self._token

    async def _fetch_user_token(self) -> None:
        user = self.config.username or ""
        url = f"{self.config.url}/api/v3/users/{_seg(user)}/token?ttl={USER_TOKEN_TTL_S}"
        data = await self._send("GET", url, headers={"Authorization": self._basic()})
        token = data.get("Token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise DrpAuthError(f"DRP returned no token for user {user}")
        self._token = token
        self._token_expires = time.monotonic() + USER_TOKEN_TTL_S * 0.8
        log.info("fetched a DRP token for user %s (renewed in %ds)", user, USER_TOKEN_TTL_S * 0.8)

    # ---- transport ------------------------------------------------------------------------

    async def _send(self, method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
        data = None if body is None else json.dumps(body)
        hdrs = {**headers, "Accept": "application/json"}
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        try:
            async with self._session.request(method, url, data=data, headers=hdrs) as resp:
                text = await resp.text()
                if resp.status in (401, 403):
                    raise DrpAuthError(f"DRP {method} {url}: HTTP {resp.status}", resp.status)
                if resp.status == 404:
                    raise DrpNotFoundError(f"DRP {method} {url}: not found", 404)
                if resp.status >= 500:
                    raise DrpUnavailableError(
                        f"DRP {method} {url}: HTTP {resp.status}", resp.status
                    )
                if resp.status >= 400:
                    raise DrpError(
                        f"DRP {method} {url}: HTTP {resp.status}: {text[:200]}", resp.status
                    )
                return json.loads(text) if text else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DrpUnavailableError(f"DRP {method} {url}: {type(exc).__name__}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise DrpError(f"DRP {method} {url}: response is not JSON") from exc

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """Call ``path`` (``/api/v3/...``) with auth; renews a user token once on 401.

        Raises:
            DrpAuthError, DrpNotFoundError, DrpUnavailableError, DrpError.
        """
        url = self.config.url + path
        token = await self._bearer()
        try:
            return await self._send(method, url, {"Authorization": f"Bearer {token}"}, body)
        except DrpAuthError:
            if not self.config.username:
                raise
            token = await self._bearer(renew=True)
            return await self._send(method, url, {"Authorization": f"Bearer {token}"}, body)

    # ---- API ------------------------------------------------------------------------------

    async def list_pages(
        self, kind: str, query: str = "", page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """``GET /api/v3/<kind>`` page by page (``offset``/``limit``)."""
        offset = 0
        while True:
            sep = "&" if query else ""
            page = await self.request(
                "GET", f"/api/v3/{kind}?{query}{sep}offset={offset}&limit={page_size}"
            )
            if not isinstance(page, list):
                raise DrpError(f"DRP list of {kind} is not a JSON list")
            yield page
            if len(page) < page_size:
                return
            offset += page_size

    async def contexts(self) -> dict[str, Context]:
        raw = await self.request("GET", "/api/v3/contexts")
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
        """A token for the agent in a machine's context container (``RS_TOKEN``)."""
        data = await self.request("GET", f"/api/v3/machines/{_seg(uuid)}/token?ttl={ttl_s}")
        token = data.get("Token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise DrpError(f"DRP returned no token for machine {uuid}")
        return token

    async def create(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = await self.request("POST", f"/api/v3/{kind}", obj)
        return out

    async def delete(self, kind: str, uuid: str) -> None:
        await self.request("DELETE", f"/api/v3/{kind}/{_seg(uuid)}")

    async def set_param(self, kind: str, uuid: str, key: str, value: Any) -> None:
        await self.request("POST", f"/api/v3/{kind}/{_seg(uuid)}/params/{_seg(key)}", value)

    async def patch(self, kind: str, uuid: str, ops: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = await self.request("PATCH", f"/api/v3/{kind}/{_seg(uuid)}", ops)
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

        Ends (returns) when DRP closes the stream; the caller reconnects and resyncs.

        Raises:
            DrpAuthError, DrpUnavailableError: the connection failed or broke.
            DrpFrameTooLargeError: a frame over ``max_msg_size`` bytes broke the connection.
        """
        token = await self._bearer()
        ws_url = self.config.url.replace("http", "ws", 1) + "/api/v3/ws"
        try:
            ws = await self._session.ws_connect(
                ws_url,
                headers={"Authorization": f"Bearer {token}"},
                heartbeat=heartbeat_s,
                max_msg_size=max_msg_size,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise DrpAuthError(f"DRP websocket: HTTP {exc.status}", exc.status) from exc
            raise DrpUnavailableError(f"DRP websocket: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DrpUnavailableError(f"DRP websocket: {type(exc).__name__}: {exc}") from exc
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


def _ws_error(exc: object, max_msg_size: int) -> DrpError:
    """The error for a failed websocket read (a frame over the limit, a protocol error)."""
    if getattr(exc, "code", None) == aiohttp.WSCloseCode.MESSAGE_TOO_BIG:
        return DrpFrameTooLargeError(
            f"DRP websocket: an event frame too large (over {max_msg_size} bytes)"
        )
    return DrpUnavailableError(f"DRP websocket: {type(exc).__name__}: {exc}")

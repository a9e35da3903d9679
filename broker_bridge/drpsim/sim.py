"""The simulator: serves the REST routes, the event websocket and the file space from one
thread of its own, and offers tests direct access to its objects and files."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from broker_bridge.drpsim.agent import AGENT_FILES, AGENT_SCRIPT
from broker_bridge.drpsim.auth import TokenBook, permitted
from broker_bridge.drpsim.files import FileStore
from broker_bridge.drpsim.filesapi import add_routes as add_file_routes
from broker_bridge.drpsim.patch import PatchError
from broker_bridge.drpsim.rest import PRINCIPAL, RestApi, error
from broker_bridge.drpsim.state import (
    DEFAULT_TOKEN,
    DEFAULT_USERS,
    SimState,
    new_machine,
    server_info,
)
from broker_bridge.drpsim.ws import add_routes as add_ws_routes

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
_ANY_ADDRESS = ("0.0.0.0", "::", "")  # noqa: S104 - names, not a binding


class DrpSim(SimState):
    """The simulator. Thread-safe: objects are only touched on its own event loop (the methods
    below run there), files through a locked store.

    Args:
        token: the user token it accepts and hands out.
        users: user name -> password for Basic auth (default ``rocketskates``).
        drop_share: share of events silently not sent (DRP drops under load).
        seed: seed of the event-dropping randomness.
        host: address to listen on (default loopback; ``"0.0.0.0"`` or the Docker bridge
            gateway so that containers reach it, see :meth:`url_for`).
        clock: monotonic seconds, for machine token expiry.
    """

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        users: dict[str, str] | None = None,
        drop_share: float = 0.0,
        seed: int | None = None,
        host: str = LOOPBACK,
        clock: Callable[[], float] = time.monotonic,
        port: int = 0,
    ) -> None:
        super().__init__(drop_share=drop_share, seed=seed)
        self.tokens = TokenBook(token, DEFAULT_USERS if users is None else users, clock)
        self.host = host
        self.requests = 0
        #: Every request as it arrived: (method, path with query, Authorization header).
        self.seen: list[tuple[str, str, str]] = []
        self.fail_auth = False  # answer 401 to everything (tests of the bridge's backoff)
        self._files: FileStore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = port  # 0: any free port (known once started)

    @property
    def token(self) -> str:
        """The user token it accepts."""
        return self.tokens.token

    @token.setter
    def token(self, value: str) -> None:
        """Accept ``value`` instead from now on (tests: DRP forgot the old token)."""
        self.tokens.token = value

    @property
    def users(self) -> dict[str, str]:
        """User name -> password (Basic auth)."""
        return self.tokens.users

    # ---- lifecycle ---------------------------------------------------------------------------

    def app(self, files: FileStore) -> web.Application:
        """The aiohttp application: auth middleware, REST, files, websocket."""
        app = web.Application(middlewares=[self._auth_mw], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/api/v3/users/{user}/token", self._user_token)
        RestApi(self, self.tokens, lambda: self.port).add_routes(app.router)
        add_file_routes(app.router, files)
        add_ws_routes(app.router, self)
        return app

    def start(self) -> DrpSim:
        """Serve in a thread of its own, with the stand-in ``drpcli`` in its file space.

        Raises:
            RuntimeError: the server did not come up within 10 s.
            OSError: ``host`` cannot be bound.
        """
        files = self._files = FileStore()
        for name in AGENT_FILES:
            files.put(name, AGENT_SCRIPT.encode())
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._runner = web.AppRunner(self.app(files), access_log=None)
            try:
                loop.run_until_complete(self._runner.setup())
                site = web.TCPSite(self._runner, self.host, self.port)
                loop.run_until_complete(site.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.run_until_complete(self._runner.cleanup())
                loop.close()
                return
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
        if failure:
            self._loop = None
            files.close()
            raise failure[0]
        return self

    def stop(self) -> None:
        """Close every websocket, stop serving and remove the file space."""
        if self._loop is not None:
            self.call(self.close_all_ws())
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        if self._files is not None:
            self._files.close()

    def __enter__(self) -> DrpSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Its URL for this host (loopback when it listens on every address)."""
        return self.url_for(LOOPBACK if self.host in _ANY_ADDRESS else self.host)

    def url_for(self, host: str) -> str:
        """Its URL with ``host`` in place of the address (e.g. ``"172.17.0.1"``, the Docker
        bridge gateway, for containers), and its port."""
        return f"http://{host}:{self.port}"

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the simulator's loop from another thread; return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    # ---- files (tests) -----------------------------------------------------------------------

    @property
    def files(self) -> FileStore:
        """Its file space (exists while it runs)."""
        if self._files is None:
            raise RuntimeError("the DRP simulator has no file space before start()")
        return self._files

    def put_file(self, path: str, data: bytes | Path) -> str:
        """Store ``data`` (bytes, or a file's content, copied in chunks) at ``path`` in the
        file space; returns its sha256 (hex).

        Raises:
            FilePathError: ``path`` is absolute or has ``..`` or empty segments.
            FileConflictError: a directory is in the way.
            RuntimeError: the simulator has not started.
        """
        return self.files.put(path, data)

    def delete_file(self, path: str) -> bool:
        """Remove a file from the file space; False when there was none."""
        return self.files.delete(path)

    @property
    def downloads(self) -> Counter[str]:
        """Completed ``GET`` downloads per path (``HEAD`` does not count); a copy."""
        return self.files.downloads()

    def download_count(self, path: str) -> int:
        """Completed ``GET`` downloads of ``path``."""
        return self.files.downloads()[path]

    # ---- objects (tests) ---------------------------------------------------------------------

    def put_context(self, name: str, engine: str = "docker-context", image: str = "") -> None:
        """Create or replace a context (emits ``create``/``update``)."""
        obj = {"Name": name, "Engine": engine, "Image": image, "Meta": {}, "Description": ""}
        self.call(self.store_context(obj))

    def put_profile(self, name: str, params: dict[str, Any]) -> None:
        """A profile whose params machines listing it inherit (``aggregate=true``)."""

        async def do() -> None:
            self.profiles[name] = dict(params)

        self.call(do())

    def delete_context(self, name: str) -> None:
        """Remove a context (emits ``delete``)."""
        self.call(self.drop_context(name))

    def create_machine(
        self,
        name: str,
        context: str = "",
        params: dict[str, Any] | None = None,
        kind: str = "machines",
    ) -> dict[str, Any]:
        """Create a machine (or cluster, resource broker) and emit ``create``; returns it."""
        return self.call(self.store(kind, new_machine(name, context, params)))

    def update_machine(self, uuid: str, kind: str = "machines", **changes: Any) -> dict[str, Any]:
        """Replace top-level fields (``Context=``, ``Params=``) and emit ``update``."""

        async def do() -> dict[str, Any]:
            after = copy.deepcopy(self.objects[kind][uuid])
            after.update(changes)
            return self.replace(kind, uuid, after, "update")

        return self.call(do())

    def set_param(self, uuid: str, key: str, value: Any, kind: str = "machines") -> None:
        """Set one param and emit ``save``."""

        async def do() -> None:
            after = copy.deepcopy(self.objects[kind][uuid])
            after["Params"][key] = value
            self.replace(kind, uuid, after, "save")

        self.call(do())

    def delete_machine(self, uuid: str, kind: str = "machines") -> None:
        """Remove an object (emits ``delete``); nothing when it is gone already."""

        async def do() -> None:
            obj = self.objects[kind].pop(uuid, None)
            if obj is not None:
                self.emit(kind, "delete", uuid, obj, None)

        self.call(do())

    def get(self, uuid: str, kind: str = "machines") -> dict[str, Any] | None:
        """A copy of an object, or None."""

        async def do() -> dict[str, Any] | None:
            obj = self.objects[kind].get(uuid)
            return copy.deepcopy(obj) if obj else None

        return self.call(do())

    def list(self, kind: str = "machines") -> list[dict[str, Any]]:
        """Copies of every object of ``kind``."""

        async def do() -> list[dict[str, Any]]:
            return [copy.deepcopy(o) for o in self.objects[kind].values()]

        return self.call(do())

    def cut_websockets(self) -> None:
        """Close every websocket (the bridge must reconnect and resync)."""
        self.call(self.close_all_ws())

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

    # ---- auth --------------------------------------------------------------------------------

    def principal(self, request: web.Request) -> str | None:
        """The caller: ``"token"``, a user, ``machine:<kind>/<uuid>``; None when unknown."""
        if self.fail_auth:
            return None
        return self.tokens.principal(
            request.headers.get("Authorization", ""), request.query.get("token")
        )

    async def _user_token(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        if request.get(PRINCIPAL) not in (user, "token"):
            return error(403, "forbidden")
        return web.json_response({"Token": self.token, "Info": server_info(self.port)})

    @web.middleware
    async def _auth_mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        self.seen.append(
            (request.method, request.path_qs, request.headers.get("Authorization", ""))
        )
        principal = self.principal(request)
        if principal is None:
            return error(401, "Unauthorized")
        if not permitted(principal, request.method, request.path):
            return error(403, f"{principal} may not {request.method} {request.path}")
        request[PRINCIPAL] = principal
        try:
            response: web.StreamResponse = await handler(request)
        except PatchError as exc:
            return error(exc.status, str(exc))
        return response

"""DRP's files API over a :class:`~broker_bridge.drpsim.files.FileStore`.

- ``GET /api/v3/files/<path>``: the file, streamed from disk, with ``Content-Length`` and
  ``X-DRP-SHA256SUM``; a download is counted once its last byte went to the connection;
- ``HEAD /api/v3/files/<path>``: 200 with the same headers, or 404;
- ``POST /api/v3/files/<path>``: store the raw body (``application/octet-stream``, else 415),
  streamed to disk; 201 with ``{"Path", "Size"}``;
- ``DELETE /api/v3/files/<path>``: 204, or 404;
- ``GET /api/v3/files?path=<dir>``: names in that directory (directories end in ``/``).

A bad path (absolute, ``..``) answers 400.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from broker_bridge.drpsim.files import (
    FileConflictError,
    FilePathError,
    FileStore,
    check_path,
)
from broker_bridge.drpsim.patch import PatchError

log = logging.getLogger(__name__)

SHA_HEADER = "X-DRP-SHA256SUM"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _path_of(request: web.Request) -> str:
    try:
        return check_path(request.match_info["path"])
    except FilePathError as exc:
        raise PatchError(400, str(exc)) from exc


def add_routes(router: web.UrlDispatcher, store: FileStore) -> None:
    """Register the files API on ``router`` (behind the simulator's auth middleware)."""
    router.add_get("/api/v3/files", _lister(store))
    router.add_get("/api/v3/files/{path:.+}", _getter(store), allow_head=False)
    router.add_head("/api/v3/files/{path:.+}", _header(store))
    router.add_post("/api/v3/files/{path:.+}", _uploader(store))
    router.add_delete("/api/v3/files/{path:.+}", _deleter(store))


def _lister(store: FileStore) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        where = request.query.get("path", "").strip("/")
        try:
            names = store.listdir(where)
        except FilePathError as exc:
            raise PatchError(400, str(exc)) from exc
        if names is None:
            raise PatchError(404, f"no directory {where!r}")
        return web.json_response(names)

    return handler


def _header(store: FileStore) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = _path_of(request)
        opened = store.open(path)
        if opened is None:
            return web.Response(status=404)
        opened.handle.close()
        response = web.StreamResponse(headers={SHA_HEADER: opened.sha256})
        response.content_type = "application/octet-stream"
        response.content_length = opened.size
        return response

    return handler


def _getter(store: FileStore) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = _path_of(request)
        opened = store.open(path)
        if opened is None:
            raise PatchError(404, f"file {path} not found")
        loop = asyncio.get_running_loop()
        response = web.StreamResponse(headers={SHA_HEADER: opened.sha256})
        response.content_type = "application/octet-stream"
        response.content_length = opened.size
        try:
            await response.prepare(request)
            while chunk := await loop.run_in_executor(None, opened.handle.read, 1024 * 1024):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:
            log.debug("download of %s broken off by the client", path)
            return response
        finally:
            opened.handle.close()
        store.count_download(path)
        return response

    return handler


def _uploader(store: FileStore) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = _path_of(request)
        if request.content_type != "application/octet-stream":
            raise PatchError(415, "upload with Content-Type: application/octet-stream")
        loop = asyncio.get_running_loop()
        digest = hashlib.sha256()
        size = 0
        out, staged = store.begin()
        try:
            with out:
                async for chunk in request.content.iter_chunked(1024 * 1024):
                    digest.update(chunk)
                    size += len(chunk)
                    await loop.run_in_executor(None, out.write, chunk)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        sha = digest.hexdigest()
        try:
            store.commit(path, staged, sha)
        except FileConflictError as exc:
            raise PatchError(409, str(exc)) from exc
        return web.json_response(
            {"Path": "/" + path, "Size": size}, status=201, headers={SHA_HEADER: sha}
        )

    return handler


def _deleter(store: FileStore) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = _path_of(request)
        if not store.delete(path):
            raise PatchError(404, f"file {path} not found")
        return web.Response(status=204)

    return handler

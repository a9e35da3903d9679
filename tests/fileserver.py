"""A loopback HTTP server standing in for DRP's file space (``/api/v3/files/<path>``), with
DRP's checksum header, Bearer tokens, user tokens and injectable faults."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pool.drp.files import SHA256_HEADER

USER, PASSWORD = "rocketskates", "r0cketsk8ts"
FILES = "/api/v3/files/"


class FileServer:
    """Serves ``files`` (path -> bytes) under ``/api/v3/files/`` with DRP's checksum header.

    ``tokens`` are accepted as Bearer (empty: any); user tokens are issued with Basic auth as
    ``user-<n>``; ``refuse`` is a set of tokens answered 401. ``bad_sha`` names paths whose
    header lies; ``cut`` names paths whose body stops halfway; ``fail`` paths answer 503.
    """

    def __init__(self, require_auth: bool = True) -> None:
        self.files: dict[str, bytes] = {}
        self.require_auth = require_auth
        self.tokens: set[str] = set()
        self.refuse: set[str] = set()
        self.bad_sha: set[str] = set()
        self.cut: set[str] = set()
        self.fail: set[str] = set()
        self.seen: list[tuple[str, str, str]] = []  # (method, path, Authorization)
        self.issued = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: bytes = b"", headers: Any = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _serve(self) -> None:
                auth = self.headers.get("Authorization", "")
                server.seen.append((self.command, self.path, auth))
                if self.path.startswith(f"/api/v3/users/{USER}/token"):
                    server.issued += 1
                    token = f"user-{server.issued}"
                    server.tokens.add(token)
                    self._reply(200, f'{{"Token": "{token}"}}'.encode())
                    return
                if server.require_auth:
                    token = auth.removeprefix("Bearer ")
                    if token in server.refuse or token not in server.tokens:
                        self._reply(401, b'{"Error": "unauthorized"}')
                        return
                path = self.path.split("?")[0].removeprefix(FILES)
                if path in server.fail:
                    self._reply(503, b"busy")
                    return
                data = server.files.get(path)
                if data is None:
                    self._reply(404, b'{"Error": "not found"}')
                    return
                sha = hashlib.sha256(b"lie" if path in server.bad_sha else data).hexdigest()
                headers = {SHA256_HEADER: sha, "Content-Length": str(len(data))}
                if path in server.cut and self.command == "GET":
                    self._reply(200, data[: len(data) // 2], headers)
                    self.close_connection = True
                    return
                self._reply(200, data, headers)

            do_GET = do_HEAD = _serve  # noqa: N815

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def put(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return hashlib.sha256(data).hexdigest()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

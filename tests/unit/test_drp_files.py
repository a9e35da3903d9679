"""DRP's file client (:mod:`pool.drp.files`) against a loopback file server: HEAD and the
checksum header, streaming to disk, checksum refusals, 404/5xx/cut streams, 401 renewal, and
tokens kept to DRP's own host and out of messages."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pool.drp.config import DrpConfig
from pool.drp.errors import DrpAuthError, DrpNotFoundError, DrpUnavailableError
from pool.drp.files import SHA256_HEADER, DrpChecksumError, DrpFiles
from pool.drp.sync import TokenSource

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


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        s.tokens.add("secret-token")
        yield s


def _files(server: FileServer, **kw: Any) -> DrpFiles:
    config = DrpConfig(url=server.url, token="secret-token")
    return DrpFiles(TokenSource(config), **kw)


def test_head_gives_sha256_and_size_and_none_for_404(server: FileServer) -> None:
    sha = server.put("drpcli.amd64.linux", b"x" * 1234)
    files = _files(server)
    info = files.head("drpcli.amd64.linux")
    assert info is not None
    assert (info.sha256, info.size_bytes) == (sha, 1234)
    assert files.head("nope") is None
    assert server.seen[0] == ("HEAD", "/api/v3/files/drpcli.amd64.linux", "Bearer secret-token")


def test_download_streams_to_disk_in_chunks(server: FileServer, tmp_path: Path) -> None:
    data = os.urandom(1 << 20) * 24  # 24 MiB
    sha = server.put("docker-contexts/big", data)
    files = _files(server, chunk_bytes=64 << 10)
    dest = tmp_path / "big.tar"
    tracemalloc.start()
    try:
        got = files.download("docker-contexts/big", dest, expected_sha256=sha.upper())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == sha
    assert dest.read_bytes() == data
    # the whole archive in memory would peak above 24 MiB; chunks stay far below
    assert peak < 4 << 20, f"peak {peak} bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tar"]  # no temp file left


def test_a_wrong_expected_sha256_keeps_nothing(server: FileServer, tmp_path: Path) -> None:
    sha = server.put("a", b"archive")
    dest = tmp_path / "a.tar"
    with pytest.raises(DrpChecksumError) as err:
        _files(server).download("a", dest, expected_sha256="0" * 64)
    assert err.value.actual == sha
    assert err.value.expected == "0" * 64
    assert sha in str(err.value)
    assert "0" * 64 in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_drp_checksum_header_is_checked_without_an_expected_sum(
    server: FileServer, tmp_path: Path
) -> None:
    server.put("a", b"archive")
    server.bad_sha.add("a")
    with pytest.raises(DrpChecksumError):
        _files(server).download("a", tmp_path / "a.tar")
    assert list(tmp_path.iterdir()) == []


def test_404_5xx_cut_streams_and_unreachable_map_to_drp_errors(
    server: FileServer, tmp_path: Path
) -> None:
    files = _files(server)
    with pytest.raises(DrpNotFoundError, match="/api/v3/files/missing"):
        files.download("missing", tmp_path / "m")
    server.put("busy", b"x")
    server.fail.add("busy")
    with pytest.raises(DrpUnavailableError, match="503"):
        files.head("busy")
    server.put("cut", os.urandom(200_000))
    server.cut.add("cut")
    with pytest.raises(DrpUnavailableError, match="stream broke"):
        files.download("cut", tmp_path / "cut")
    assert list(tmp_path.iterdir()) == []
    dead = DrpFiles(TokenSource(DrpConfig(url="http://127.0.0.1:9", token="secret-token")))
    with pytest.raises(DrpUnavailableError) as err:
        dead.download("x", tmp_path / "x")
    assert "secret-token" not in str(err.value)


def test_a_refused_user_token_is_renewed_once(server: FileServer, tmp_path: Path) -> None:
    server.put("a", b"archive")
    config = DrpConfig(url=server.url, username=USER, password=PASSWORD)
    files = DrpFiles(TokenSource(config))
    assert files.download("a", tmp_path / "a") == hashlib.sha256(b"archive").hexdigest()
    assert server.issued == 1
    server.refuse.add("user-1")  # DRP forgot the token
    assert files.head("a") is not None
    assert server.issued == 2
    heads = [auth for method, path, auth in server.seen if method == "HEAD"]
    assert heads == ["Bearer user-1", "Bearer user-2"]


def test_a_refused_configured_token_fails_without_quoting_it(server: FileServer) -> None:
    server.put("a", b"archive")
    server.refuse.add("secret-token")
    with pytest.raises(DrpAuthError) as err:
        _files(server).head("a")
    assert "secret-token" not in str(err.value)
    assert server.issued == 0


def test_a_url_elsewhere_gets_no_drp_token(server: FileServer, tmp_path: Path) -> None:
    with FileServer(require_auth=False) as other:
        sha = other.put("archives/x.tar", b"elsewhere")
        files = _files(server)
        url = f"{other.url}/api/v3/files/archives/x.tar?sig=abc"
        assert not files.is_drp(url)
        assert files.is_drp(f"{server.url}/api/v3/files/archives/x.tar")
        info = files.head(url)
        assert info is not None
        assert info.sha256 == sha
        assert files.download(url, tmp_path / "x") == sha
        assert [auth for _, _, auth in other.seen] == ["", ""]
        with pytest.raises(DrpNotFoundError) as err:
            files.download(f"{other.url}/nothing?sig=abc", tmp_path / "y")
        assert "sig=abc" not in str(err.value)

"""DRP's file client (:mod:`pool.drp.files`) against a loopback file server: HEAD and the
checksum header, streaming to disk, checksum refusals, 404/5xx/cut streams, 401 renewal, and
tokens kept to DRP's own host and out of messages."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pool.drp.config import DrpConfig
from pool.drp.errors import DrpAuthError, DrpNotFoundError, DrpUnavailableError
from pool.drp.files import DrpChecksumError, DrpFiles
from pool.drp.sync import TokenSource
from tests.fileserver import PASSWORD, USER, FileServer


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

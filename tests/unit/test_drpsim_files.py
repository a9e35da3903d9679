"""The DRP simulator's file space: DRP's files API on a real loopback server, and the
Python-side helpers tests use (``put_file``, ``delete_file``, download counts)."""

from __future__ import annotations

import hashlib
import http.client
import os
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from broker_bridge.drpsim import (
    AGENT_FILES,
    AGENT_SCRIPT,
    SHA_HEADER,
    DrpSim,
    FilePathError,
    check_path,
)
from tests.support import wait_for

#: Larger than the simulator's ``client_max_size`` (64 MiB): an upload that the server read
#: into memory would be refused with 413.
BIG_BYTES = 65 * 1024 * 1024


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    with DrpSim(seed=5) as s:
        yield s


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A file of ``BIG_BYTES`` random bytes and its sha256."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(BIG_BYTES // (1024 * 1024)):
            chunk = os.urandom(1024 * 1024)
            digest.update(chunk)
            out.write(chunk)
    return path, digest.hexdigest()


def _auth(sim: DrpSim) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.token}"}


def _files(sim: DrpSim, path: str = "") -> str:
    return f"{sim.url}/api/v3/files/{path}" if path else f"{sim.url}/api/v3/files"


def _raw(sim: DrpSim, method: str, target: str) -> int:
    """Status of a request sent as written (no client-side path normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        conn.request(method, target, headers=_auth(sim))
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_upload_head_get_delete(sim: DrpSim) -> None:
    data = b"image archive bytes\n" * 1000
    sha = hashlib.sha256(data).hexdigest()
    octet = {**_auth(sim), "Content-Type": "application/octet-stream"}
    up = requests.post(
        _files(sim, "docker-contexts/runner_v1.tar"), data=data, headers=octet, timeout=30
    )
    assert up.status_code == 201
    assert up.json() == {"Path": "/docker-contexts/runner_v1.tar", "Size": len(data)}
    assert up.headers[SHA_HEADER] == sha

    head = requests.head(
        _files(sim, "docker-contexts/runner_v1.tar"), headers=_auth(sim), timeout=30
    )
    assert head.status_code == 200
    assert head.headers[SHA_HEADER] == sha
    assert head.headers["Content-Length"] == str(len(data))
    assert sim.download_count("docker-contexts/runner_v1.tar") == 0  # HEAD does not count

    got = requests.get(_files(sim, "docker-contexts/runner_v1.tar"), headers=_auth(sim), timeout=30)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers[SHA_HEADER] == sha
    assert got.headers["Content-Length"] == str(len(data))
    assert got.headers["Content-Type"] == "application/octet-stream"
    wait_for(lambda: sim.download_count("docker-contexts/runner_v1.tar") == 1, 5)

    listed = requests.get(
        _files(sim), params={"path": "/docker-contexts"}, headers=_auth(sim), timeout=30
    )
    assert listed.json() == ["runner_v1.tar"]
    root = requests.get(_files(sim), params={"path": "/"}, headers=_auth(sim), timeout=30).json()
    assert root == sorted([*AGENT_FILES, "docker-contexts/"])

    gone = requests.delete(
        _files(sim, "docker-contexts/runner_v1.tar"), headers=_auth(sim), timeout=30
    )
    assert gone.status_code == 204
    for method in ("GET", "HEAD", "DELETE"):
        answer = requests.request(
            method, _files(sim, "docker-contexts/runner_v1.tar"), headers=_auth(sim), timeout=30
        )
        assert answer.status_code == 404, method
    assert sim.downloads == {"docker-contexts/runner_v1.tar": 1}


def test_upload_replaces_and_needs_octet_stream(sim: DrpSim) -> None:
    first = sim.put_file("a/b.tar", b"one")
    assert first == hashlib.sha256(b"one").hexdigest()
    refused = requests.post(
        _files(sim, "a/b.tar"),
        data=b"two",
        headers={**_auth(sim), "Content-Type": "text/plain"},
        timeout=30,
    )
    assert refused.status_code == 415
    assert requests.get(_files(sim, "a/b.tar"), headers=_auth(sim), timeout=30).content == b"one"
    second = sim.put_file("a/b.tar", b"two")
    head = requests.head(_files(sim, "a/b.tar"), headers=_auth(sim), timeout=30)
    assert head.headers[SHA_HEADER] == second == hashlib.sha256(b"two").hexdigest()
    conflict = requests.post(
        _files(sim, "a/b.tar/c"),
        data=b"x",
        headers={**_auth(sim), "Content-Type": "application/octet-stream"},
        timeout=30,
    )
    assert conflict.status_code == 409  # a file is where a directory must be
    assert sim.delete_file("a/b.tar") is True
    assert sim.delete_file("a/b.tar") is False


def test_the_stand_in_drpcli_is_served_for_both_architectures(sim: DrpSim) -> None:
    for name in AGENT_FILES:
        got = requests.get(_files(sim, name), headers=_auth(sim), timeout=30)
        assert got.status_code == 200
        assert got.text == AGENT_SCRIPT
        assert got.headers[SHA_HEADER] == hashlib.sha256(AGENT_SCRIPT.encode()).hexdigest()


def test_files_need_credentials(sim: DrpSim) -> None:
    sim.put_file("secret.tar", b"x")
    bad = {"Authorization": "Bearer not-the-token"}
    for method in ("GET", "HEAD", "POST", "DELETE"):
        for headers in ({}, bad):
            answer = requests.request(
                method, _files(sim, "secret.tar"), headers=headers, timeout=30
            )
            assert answer.status_code == 401, (method, headers)
    assert requests.get(_files(sim), headers=bad, timeout=30).status_code == 401
    assert sim.downloads == {}
    user, password = next(iter(sim.users.items()))
    basic = requests.get(_files(sim, "secret.tar"), auth=(user, password), timeout=30)
    assert (basic.status_code, basic.content) == (200, b"x")


@pytest.mark.parametrize(
    "target",
    [
        "/api/v3/files/../x",
        "/api/v3/files/%2E%2E/x",
        "/api/v3/files/a/../../x",
        "/api/v3/files/a%2F..%2F..%2Fx",
        "/api/v3/files//etc/passwd",
        "/api/v3/files/./drpcli.amd64.linux",
        "/api/v3/files?path=../..",
    ],
)
def test_paths_outside_the_file_space_are_refused(sim: DrpSim, target: str) -> None:
    for method in ("GET", "HEAD", "POST", "DELETE"):
        if "?" in target and method != "GET":
            continue
        assert _raw(sim, method, target) == 400, method


@pytest.mark.parametrize("path", ["", "/abs", "../x", "a/../b", "a//b", "a/./b", "a\\b", "a/"])
def test_check_path_refuses(path: str) -> None:
    with pytest.raises(FilePathError):
        check_path(path)


def test_put_file_refuses_bad_paths_and_needs_a_started_sim(tmp_path: Path) -> None:
    sim = DrpSim()
    with pytest.raises(RuntimeError):
        sim.put_file("a.tar", b"x")
    with sim:
        with pytest.raises(FilePathError):
            sim.put_file("../a.tar", b"x")
        root = sim.files.root
        assert root.is_dir()
    assert not root.exists()  # the file space went with the simulator


def test_big_files_stream_both_ways(sim: DrpSim, big_file: tuple[Path, str]) -> None:
    """A file larger than the server's request size limit goes up and down in chunks: the
    upload is not refused, and neither direction holds the file in memory."""
    path, sha = big_file

    def chunks() -> Iterator[bytes]:
        with path.open("rb") as src:
            while chunk := src.read(1024 * 1024):
                yield chunk

    tracemalloc.start()
    try:
        up = requests.post(
            _files(sim, "big/archive.tar"),
            data=chunks(),
            headers={**_auth(sim), "Content-Type": "application/octet-stream"},
            timeout=30,
        )
        assert up.status_code == 201, up.text
        assert up.headers[SHA_HEADER] == sha
        digest, size = hashlib.sha256(), 0
        with requests.get(
            _files(sim, "big/archive.tar"), headers=_auth(sim), stream=True, timeout=30
        ) as got:
            assert got.headers["Content-Length"] == str(BIG_BYTES)
            for chunk in got.iter_content(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (size, digest.hexdigest()) == (BIG_BYTES, sha)
    assert peak < BIG_BYTES // 4, f"peak {peak} bytes: something held the file in memory"
    wait_for(lambda: sim.download_count("big/archive.tar") == 1, 5)


def test_a_broken_off_download_is_not_counted(sim: DrpSim, big_file: tuple[Path, str]) -> None:
    path, _ = big_file
    sim.put_file("big.tar", path)
    with requests.get(_files(sim, "big.tar"), headers=_auth(sim), stream=True, timeout=30) as got:
        assert len(next(got.iter_content(1024 * 1024))) > 0
    # The server is still writing (the file is far larger than the socket buffers) when the
    # client goes away; give it time to notice.
    time.sleep(1.0)
    assert sim.download_count("big.tar") == 0
    assert (
        len(requests.get(_files(sim, "big.tar"), headers=_auth(sim), timeout=30).content)
        == BIG_BYTES
    )
    wait_for(lambda: sim.download_count("big.tar") == 1, 5)

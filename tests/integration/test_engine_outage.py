"""An engine that is down is an expected condition (issue 9, node hygiene).

The node talks to the real Docker engine through a unix-socket proxy the test can cut. While
it is cut: one log line per transition, no traceback, ``ctxpool_engine_up 0`` and an outage
counted. When it is back, the node sweeps itself and everything converges, without waiting
for the sweep period.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.request
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from pool.contexts.api import ContextAPI
from pool.contexts.models import ContextSpec, RunState
from pool.contexts.store import StateStore
from tests import support
from tests.support import Worker, free_port, wait_for

pytestmark = pytest.mark.integration

DOCKER_SOCK = "/var/run/docker.sock"


class SocketProxy:
    """Forwards a unix socket to the Docker engine's; :meth:`cut` drops every connection and
    refuses new ones, :meth:`restore` accepts again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        self.path.unlink(missing_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.path))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            conns, self._conns = self._conns, []
        if server is not None:
            server.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.path.unlink(missing_ok=True)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(DOCKER_SOCK)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[SocketProxy]:
    support.need(Path(DOCKER_SOCK).exists(), f"no Docker socket at {DOCKER_SOCK}")
    p = SocketProxy(tmp_path / "docker.sock")
    p.restore()
    yield p
    p.cut()


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


def _running(store: StateStore, uuid: str) -> Callable[[], bool]:
    return lambda: store.status(uuid).state is RunState.RUNNING


def test_engine_down_is_logged_once_counted_and_swept_back(
    proxy: SocketProxy,
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
) -> None:
    port = free_port()
    worker = start_worker(
        "e-1",
        ["tag-ci"],
        CTXPOOL_DOCKER_URL=f"unix://{proxy.path}",
        CTXPOOL_DOCKER_TIMEOUT_S="3",
        CTXPOOL_NODE_METRICS_PORT=str(port),
        CTXPOOL_SWEEP_S="600",  # only the recovery sweep can bring things back in time
    )
    first = str(uuidlib.uuid4())
    api.apply(ContextSpec(uuid=first, context=ctx_name, image=test_image, tag="ci"))
    wait_for(_running(store, first), 30, what="first context running")
    wait_for(lambda: 'ctxpool_engine_up{node="e-1"} 1.0' in _metrics(port), 10, what="up")

    proxy.cut()
    # meanwhile: a new context arrives, and the first one's container vanishes
    second = str(uuidlib.uuid4())
    api.apply(ContextSpec(uuid=second, context=ctx_name, image=test_image, tag="ci"))
    wait_for(lambda: 'ctxpool_engine_up{node="e-1"} 0.0' in _metrics(port), 15, what="down")
    assert 'ctxpool_engine_outages_total{node="e-1"} 1.0' in _metrics(port)
    for row in docker_engine.api.containers(all=True, filters={"name": f"drp-{ctx_name}-"}):
        docker_engine.api.remove_container(row["Id"], force=True)
    wait_for(lambda: store.status(second).state is RunState.ERROR, 15, what="second waits")

    proxy.restore()

    def names() -> set[str]:
        rows = docker_engine.api.containers(filters={"name": f"drp-{ctx_name}-"})
        return {row["Names"][0].lstrip("/") for row in rows}

    # the first context's status never left "running": only its container proves it is back
    expected = {f"drp-{ctx_name}-{first}", f"drp-{ctx_name}-{second}"}
    wait_for(lambda: names() == expected, 30, 0.3, what="both containers running")
    wait_for(_running(store, second), 30, what="second context running")
    wait_for(lambda: 'ctxpool_engine_up{node="e-1"} 1.0' in _metrics(port), 10, what="up")

    log = worker.log()
    assert "Traceback" not in log
    assert log.count("container engine unreachable") == 1  # one line per outage
    assert log.count("container engine is back; sweeping now") == 1

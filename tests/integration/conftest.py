"""Fixtures of the bridge's integration tests: the DRP simulator and the bridge in a thread."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker_bridge.drpsim import DrpSim
from broker_bridge.main import serve
from pool.settings import Settings
from tests.conftest import _settings_from


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    with DrpSim() as s:
        yield s


@pytest.fixture
def drp_env(sim: DrpSim) -> dict[str, str]:
    return {"CTXPOOL_DRP_URL": sim.url, "CTXPOOL_DRP_TOKEN": sim.token}


@pytest.fixture
def run_bridge(pool_env: dict[str, str], drp_env: dict[str, str]) -> Iterator[Callable[..., None]]:
    """Start the bridge (``broker_bridge.main.serve``) in a thread; stopped after the test."""
    running: list[tuple[threading.Thread, asyncio.AbstractEventLoop, asyncio.Event]] = []

    def start(**overrides: Any) -> None:
        settings = _settings_from({**pool_env, **drp_env})
        overrides.setdefault("bridge_metrics_port", 0)
        settings = Settings(**{**settings.model_dump(), **overrides})
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        def run() -> None:
            loop.run_until_complete(serve(settings, stop))

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        running.append((thread, loop, stop))

    yield start
    for thread, loop, stop in running:
        loop.call_soon_threadsafe(stop.set)
        thread.join(20)


def free_port() -> int:
    """A loopback TCP port nobody listens on (for the bridge's /healthz and /metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    """``(status, body)`` of ``GET http://127.0.0.1:<port><path>``; (0, "") when refused."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def metric(body: str, sample: str) -> float | None:
    """The value of ``sample`` (its name and labels exactly as exposed, e.g.
    ``ctxpool_loop_up{component="bridge",loop="resync"}``) in a Prometheus page."""
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return None

"""``/healthz`` and ``/metrics`` of supervised loops: served over HTTP, and on a real node
whose Redis goes away and comes back (its loops survive, counted, and report it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pool.health import Health, serve_health
from tests.support import RedisServer, Worker, free_port, wait_for

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_healthz_and_metrics_over_http() -> None:
    clock = Clock()
    health = Health("bridge", clock)
    health.register("resync", stale_after_s=10)
    server = serve_health(health, 0, "127.0.0.1")
    assert server is not None
    base = f"http://127.0.0.1:{server.port}"
    try:
        status, body = _get(f"{base}/healthz")
        assert status == 200
        assert json.loads(body)["healthy"] is True
        health.failed("resync", ValueError("boom"))
        clock.now += 11
        status, body = _get(f"{base}/healthz")
        assert status == 503
        assert "resync" in json.loads(body)["problems"][0]
        _, text = _get(f"{base}/metrics")
        assert 'ctxpool_loop_restarts_total{component="bridge",loop="resync"} 1.0' in text
        assert 'ctxpool_loop_up{component="bridge",loop="resync"} 0.0' in text
    finally:
        server.stop()


def test_node_loops_survive_a_redis_outage_and_healthz_shows_it(
    start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path).start()
    port = free_port()
    try:
        start_worker(
            "hz-1",
            ["tag-ci"],
            CTXPOOL_REDIS_URL=redis_server.url,  # the state store only: the broker stays up
            CTXPOOL_NODE_METRICS_PORT=str(port),
        )
        base = f"http://127.0.0.1:{port}"

        def health() -> tuple[int, dict[str, Any]]:
            status, body = _get(f"{base}/healthz")
            return status, json.loads(body)

        wait_for(lambda: health()[0] == 200, 20, 0.2, what="healthy node")
        redis_server.kill()
        # heartbeat_ttl 2s: no successful heartbeat for longer than that is a dead loop
        _, report = wait_for(lambda: (h := health())[0] == 503 and h, 30, 0.2, what="503")
        assert any(p.startswith("heartbeat:") for p in report["problems"]), report
        redis_server.start()  # back (empty): the same loops recover, nothing restarted by hand
        wait_for(lambda: health()[0] == 200, 30, 0.2, what="healthy again")
        _, text = _get(f"{base}/metrics")
        restarts = [
            line for line in text.splitlines()
            if line.startswith('ctxpool_loop_restarts_total{component="node",loop="heartbeat"}')
        ]  # fmt: skip
        assert restarts, text
        assert float(restarts[0].split()[-1]) >= 1
    finally:
        redis_server.kill()

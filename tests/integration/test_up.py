"""``ctxpool up`` end to end (issue 10, must-shows 1 and 4): one command brings up an embedded
Redis, the DRP simulator with the demo, a node, the bridge, Flower and the exporter; every
seeded machine gets its container and its agent writes back to DRP within 60 s; Flower lists
the node and its reconcile tasks behind basic auth; Ctrl-C stops everything within 10 s with no
stray process; a second `up` refuses; no engine is one clear line."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.support import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.no_broker]


def _get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)  # noqa: S310 - http to local services
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _procs_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if text in line and "ps -eo" not in line]


@pytest.fixture
def up_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTXPOOL_")}
    env.update(
        CTXPOOL_STATE_DIR=str(tmp_path / "state"),
        CTXPOOL_NODE_NAME=f"up-{os.getpid()}",
        CTXPOOL_FLOWER_PORT=str(free_port()),
        CTXPOOL_METRICS_PORT=str(free_port()),
        CTXPOOL_NODE_METRICS_PORT=str(free_port()),
        CTXPOOL_BRIDGE_METRICS_PORT=str(free_port()),
        CTXPOOL_SIM_PORT=str(free_port()),
    )
    yield env
    subprocess.run([sys.executable, "-m", "pool.up", "down"], env=env, timeout=60, check=False)


def test_up_runs_the_demo_round_trip_and_stops_cleanly(
    up_env: dict[str, str], docker_engine: docker.DockerClient, tmp_path: Path
) -> None:
    state = Path(up_env["CTXPOOL_STATE_DIR"])
    out_path = tmp_path / "up.out"
    with out_path.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pool.up", "up"], env=up_env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        started = time.monotonic()

        def output() -> str:
            return out_path.read_text(errors="replace")

        def round_trip_done() -> bool:
            assert proc.poll() is None, output()[-3000:]
            found = re.findall(
                r"MACHINES \((\d+)\): (\d+) containers running, (\d+) agents", output()
            )
            return bool(found) and found[-1][0] == found[-1][1] == found[-1][2] == "6"

        # 4 machines on two tags and 2 members of the cluster, each running and reporting
        wait_for(round_trip_done, 120, 1.0, what="every demo machine's round trip")
        elapsed = time.monotonic() - started
        assert elapsed < 60 + 30, f"round trip took {elapsed:.0f}s"  # 30 s: image build slack
        node = up_env["CTXPOOL_NODE_NAME"]
        running = docker_engine.api.containers(filters={"label": f"ctxpool.owner={node}"})
        assert len(running) == 6

        # Flower: basic auth always on; the node and its reconcile tasks show
        creds = json.loads((state / "flower-credentials.json").read_text())
        flower = f"http://127.0.0.1:{up_env['CTXPOOL_FLOWER_PORT']}"
        assert _get(f"{flower}/api/workers")[0] == 401
        auth = (creds["user"], creds["password"])

        def flower_sees() -> bool:
            status, body = _get(f"{flower}/api/workers?refresh=1", auth)
            return status == 200 and any(w.startswith(f"{node}@") for w in json.loads(body))

        wait_for(flower_sees, 30, 1.0, what="Flower lists the node")
        status, body = _get(f"{flower}/api/tasks?taskname=tasks.contexts.reconcile", auth)
        assert status == 200
        assert len(json.loads(body)) >= 6, "Flower shows the reconcile tasks"
        assert creds["password"] in output()  # printed once for the user

        # metrics: the exporter and the node answer with live values
        code, text = _get(f"http://127.0.0.1:{up_env['CTXPOOL_METRICS_PORT']}/metrics")
        assert code == 200
        assert f'ctxpool_node_up{{node="{node}"}} 1.0' in text.decode()

        # a second up refuses while this one runs
        second = subprocess.run(
            [sys.executable, "-m", "pool.up", "up"], env=up_env, capture_output=True,
            text=True, timeout=30,
        )  # fmt: skip
        assert second.returncode == 1
        assert "already running" in second.stderr

        # Ctrl-C: everything stops within 10 s, nothing stray; the containers stay
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(15)
        assert time.monotonic() - t0 < 10
        assert proc.returncode == 0
        assert _procs_mentioning(str(state)) == []
        assert len(docker_engine.api.containers(filters={"label": f"ctxpool.owner={node}"})) == 6
    finally:
        if proc.poll() is None:
            proc.kill()
    # `ctxpool down` (the fixture) removes them
    subprocess.run([sys.executable, "-m", "pool.up", "down"], env=up_env, timeout=60, check=True)
    assert docker_engine.api.containers(all=True, filters={"label": f"ctxpool.owner={node}"}) == []


def test_up_without_an_engine_says_so_in_one_line(up_env: dict[str, str]) -> None:
    env = {**up_env, "CTXPOOL_DOCKER_URL": "unix:///nonexistent/docker.sock"}
    res = subprocess.run(
        [sys.executable, "-m", "pool.up", "up"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "no Docker engine reachable" in lines[0]

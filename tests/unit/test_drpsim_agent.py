"""The stand-in ``drpcli`` run by busybox ``sh`` on this host (no Docker): it posts its param
with its machine token, keeps running, and exits 0 on SIGTERM. Only busybox is on its
``PATH``, as in the test image, so every applet goes through ``busybox <applet>``."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from broker_bridge.drpsim import AGENT_PARAM, DrpSim, write_agent
from tests.support import need, wait_for


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    with DrpSim(seed=4) as s:
        yield s


@pytest.fixture
def busybox_path(tmp_path: Path) -> Path:
    """A directory holding only ``busybox`` (the script must not need anything else)."""
    busybox = shutil.which("busybox")
    need(busybox is not None, "busybox is not installed (apt-get install busybox-static)")
    assert busybox is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "busybox").symlink_to(busybox)
    return bin_dir


def _spawn(script: Path, bin_dir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(bin_dir / "busybox"), "sh", str(script), *args],
        env={"PATH": str(bin_dir), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _posts(sim: DrpSim, uuid: str) -> list[tuple[str, str, str]]:
    """The posts to ``uuid``'s agent param the simulator received."""
    path = f"/api/v3/machines/{uuid}/params/{AGENT_PARAM}"
    return [s for s in list(sim.seen) if s[0] == "POST" and s[1] == path]


def _machine_token(sim: DrpSim, uuid: str) -> str:
    reply = requests.get(
        f"{sim.url}/api/v3/machines/{uuid}/token",
        params={"ttl": 600},
        headers={"Authorization": f"Bearer {sim.token}"},
        timeout=30,
    )
    token: str = reply.json()["Token"]
    return token


def test_processjobs_posts_its_param_and_stops_on_sigterm(
    sim: DrpSim, busybox_path: Path, tmp_path: Path
) -> None:
    uuid = sim.create_machine("m1", "runner")["Uuid"]
    other = sim.create_machine("m2", "runner")["Uuid"]
    script = write_agent(tmp_path / "drpcli")
    env = {
        "RS_UUID": uuid,
        "RS_TOKEN": _machine_token(sim, uuid),
        "RS_ENDPOINTS": f"  {sim.url} http://127.0.0.1:1",  # the first one is used
        "DRPCLI_SIM_INTERVAL_S": "0.2",
    }
    proc = _spawn(script, busybox_path, env, "machines", "processjobs")
    try:

        def seen() -> str:
            value = (sim.get(uuid) or {}).get("Params", {}).get(AGENT_PARAM)
            return value if isinstance(value, str) else ""

        first = wait_for(seen, 10, what="the agent's param")
        host, stamp = first.split(" ")
        assert host == socket.gethostname()
        time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")  # a UTC time stamp
        wait_for(lambda: len(_posts(sim, uuid)) >= 2, 10, what="a second post")
        assert {auth for _, _, auth in _posts(sim, uuid)} == {f"Bearer {env['RS_TOKEN']}"}
        assert proc.poll() is None  # it keeps running
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, output
    assert "posted" in output
    assert AGENT_PARAM not in (sim.get(other) or {})["Params"]


def test_a_foreign_token_is_refused_and_the_agent_retries(
    sim: DrpSim, busybox_path: Path, tmp_path: Path
) -> None:
    uuid = sim.create_machine("m1")["Uuid"]
    other = sim.create_machine("m2")["Uuid"]
    script = write_agent(tmp_path / "drpcli")
    env = {
        "RS_UUID": uuid,
        "RS_TOKEN": _machine_token(sim, other),  # another machine's token
        "RS_ENDPOINT": sim.url,  # RS_ENDPOINTS unset: RS_ENDPOINT is used
        "DRPCLI_SIM_INTERVAL_S": "0.2",
    }
    proc = _spawn(script, busybox_path, env, "machines", "processjobs")
    try:
        wait_for(lambda: len(_posts(sim, uuid)) >= 2, 10, what="two refused posts")
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0
    assert "could not post" in output
    assert AGENT_PARAM not in (sim.get(uuid) or {})["Params"]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("machines", "list"), {"RS_UUID": "u", "RS_TOKEN": "t", "RS_ENDPOINTS": "http://x"}),
        (("machines", "processjobs"), {"RS_UUID": "u", "RS_TOKEN": "t"}),
    ],
)
def test_usage_errors_exit_2(
    busybox_path: Path, tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    script = write_agent(tmp_path / "drpcli")
    proc = _spawn(script, busybox_path, env, *args)
    output, _ = proc.communicate(timeout=10)
    assert proc.returncode == 2, output


def test_missing_credentials_fail(busybox_path: Path, tmp_path: Path) -> None:
    script = write_agent(tmp_path / "drpcli")
    proc = _spawn(script, busybox_path, {"RS_ENDPOINTS": "http://x"}, "machines", "processjobs")
    output, _ = proc.communicate(timeout=10)
    assert proc.returncode != 0
    assert "RS_UUID is not set" in output

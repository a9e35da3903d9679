"""context/volumes and context/publish-ports end to end: DRP simulator + bridge + a real node.

Issue 9, must-show 3: a mount inside the operator's allowlist is made (read-only unless
allowed for writing); the Docker socket or ``/`` is refused with a clear, permanent error in
DRP (``docker-context/error``) and no container starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from broker_bridge.drpsim import DrpSim
from pool.contexts.models import RunState
from pool.contexts.store import StateStore
from tests import support
from tests.support import Worker, free_port, wait_for

pytestmark = pytest.mark.integration

TAG = "docker-context/tag"
ERROR = "docker-context/error"
INFO = "context/container-info"


def _running(client: docker.DockerClient, ctx: str) -> dict[str, dict[str, Any]]:
    return {
        attrs["Config"]["Labels"]["ctxpool.uuid"]: attrs
        for attrs in support.container_state(client, f"drp-{ctx}-").values()
        if attrs["State"]["Running"]
    }


def _param(sim: DrpSim, uuid: str, key: str) -> Any:
    return ((sim.get(uuid) or {}).get("Params") or {}).get(key)


def test_allowlisted_mounts_run_and_the_socket_or_root_are_refused(
    sim: DrpSim,
    drp_env: dict[str, str],
    run_bridge: Callable[..., None],
    start_worker: Callable[..., Worker],
    docker_engine: docker.DockerClient,
    store: StateStore,
    ctx_name: str,
    test_image: str,
    tmp_path: Path,
) -> None:
    shared = tmp_path / "shared"
    (shared / "ro").mkdir(parents=True)
    (shared / "rw").mkdir()
    (shared / "ro" / "hello").write_text("from the host\n")
    port = free_port()
    start_worker(
        "v-1",
        ["tag-ci"],
        CTXPOOL_ALLOWED_MOUNTS=f"{shared}/ro*",
        CTXPOOL_ALLOWED_RW_MOUNTS=f"{shared}/rw*",
        CTXPOOL_ALLOWED_PORTS=f"{port}-{port}",
        **drp_env,
    )
    sim.put_context(ctx_name, engine="docker-context", image=test_image)
    run_bridge(resync_s=60)
    good = sim.create_machine(
        "good",
        ctx_name,
        {
            TAG: "ci",
            "context/volumes": f"type=bind,source={shared}/ro,target=/ro;"
            f"type=bind,source={shared}/rw,target=/rw;type=tmpfs,target=/scratch",
            "context/publish-ports": f"127.0.0.1:{port}:8080",
        },
    )
    sock = sim.create_machine(
        "sock",
        ctx_name,
        {TAG: "ci", "context/volumes": "type=bind,source=/var/run/docker.sock,target=/d.sock"},
    )
    root = sim.create_machine(
        "root", ctx_name, {TAG: "ci", "context/volumes": "type=bind,source=/,target=/host"}
    )
    outside = sim.create_machine(
        "outside", ctx_name, {TAG: "ci", "context/volumes": "type=bind,source=/etc,target=/e"}
    )

    wait_for(lambda: good["Uuid"] in _running(docker_engine, ctx_name), 60, 0.3, what="good up")
    attrs = _running(docker_engine, ctx_name)[good["Uuid"]]
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts["/ro"]["Source"] == f"{shared}/ro"
    assert mounts["/ro"]["RW"] is False  # only allowed read-only: made read-only
    assert mounts["/rw"]["RW"] is True
    assert attrs["HostConfig"]["PortBindings"] == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    }
    assert attrs["HostConfig"]["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "3", "max-size": "10m"},
    }
    container = docker_engine.containers.get(attrs["Id"])
    assert container.exec_run(["cat", "/ro/hello"]).output == b"from the host\n"
    denied = container.exec_run(["sh", "-c", "echo x > /ro/x"])
    assert denied.exit_code != 0
    assert b"Read-only file system" in denied.output
    assert container.exec_run(["sh", "-c", "echo x > /rw/x"]).exit_code == 0
    assert (shared / "rw" / "x").read_text() == "x\n"

    expected = {
        sock["Uuid"]: "container engine's socket",
        root["Uuid"]: "host's root file system",
        outside["Uuid"]: "host path not allowed",
    }
    for uuid, why in expected.items():
        wait_for(lambda u=uuid: _param(sim, u, ERROR), 60, 0.3, what=f"error of {uuid} in DRP")
        error = _param(sim, uuid, ERROR)
        assert why in error, error
        assert "context/volumes" in error
        status = store.status(uuid)
        assert status.state is RunState.FAILED
        assert why in (status.last_error or "")
    running = _running(docker_engine, ctx_name)
    assert set(running) == {good["Uuid"]}  # no container for any refused machine
    assert not support.container_state(docker_engine, f"drp-{ctx_name}-{sock['Uuid']}")

    # what runs is written back to DRP as context/container-info
    wait_for(lambda: _param(sim, good["Uuid"], INFO), 30, 0.3, what="container-info")
    info = _param(sim, good["Uuid"], INFO)
    assert info["Node"] == "v-1"
    assert info["ContainerId"] == attrs["Id"]
    assert info["ImageId"] == attrs["Image"]
    assert info["StartedAt"]

"""docker-compose.yml end to end, with no container registry: the base image debootstrapped
from the Debian mirror, wheels built here and installed offline, the demo profile brought up
as its own compose project; a simulated DRP machine gets its container on a node of its tag,
its agent writes back to the simulator, Flower asks for credentials and sees the workers'
task events. Runs in the Redis pass of scripts/test.sh only (marker ``compose``); needs root,
Docker, docker-compose (or Compose v2) and debootstrap, and fails under CI without them.

Timings of each phase go to ``$CTXPOOL_STATE_DIR/compose-test.log`` (/tmp/ctxpool-state).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import redis
import requests

from broker_bridge.drpsim import AGENT_PARAM
from broker_bridge.drpsim.demo import DEMO_CONTEXT, DEMO_TAGS
from pool.drp.params import TAG_PARAM
from tests.deploy.compose import APP_IMAGE, Stack, bridge_gateway, build_images, compose_command
from tests.support import need, wait_for

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

SERVICES = {"redis", "bridge", "node-ci", "node-audit", "flower", "metrics", "drpsim"}
#: seed_demo's defaults: 2 machines on each demo tag, and a cluster of 2 members on tag ci.
DEMO_MACHINES = 2 * len(DEMO_TAGS) + 2
#: The node side fetches drpcli from DRP's file space only where that source exists.
OWNER_PARAM = "docker-context/owner"


def _log_path() -> Path:
    state = Path(os.environ.get("CTXPOOL_STATE_DIR", "/tmp/ctxpool-state"))
    state.mkdir(parents=True, exist_ok=True)
    return state / "compose-test.log"


def _note(line: str) -> None:
    with _log_path().open("a") as log:
        log.write(f"[compose-test] {time.strftime('%H:%M:%S')} {line}\n")


@pytest.fixture(scope="module")
def stack(
    docker_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    command = compose_command()
    need(command is not None, "neither docker-compose nor `docker compose` is installed")
    need(os.geteuid() == 0, "building the base image (debootstrap) needs root")
    need(shutil.which("debootstrap") is not None, "debootstrap is not installed")
    assert command is not None
    took = build_images(_log_path())
    _note(f"images (base, wheels, app/redis, demo context image) ready in {took:.1f} s")
    s = Stack(
        command=command,
        work_dir=tmp_path_factory.mktemp("compose"),
        gateway=bridge_gateway(docker_engine),
        agent_inject=True,
    )
    try:
        s.up()
        yield s
    finally:
        left = s.teardown(docker_engine)
        _note(f"project {s.project} torn down; left over: {left or 'nothing'}")
        assert not left, f"left over after teardown: {left}"


def _diagnose(stack: Stack) -> str:
    return stack.compose("logs", "--no-color", "--tail", "25", check=False).stdout[-6000:]


def _machines(stack: Stack) -> list[dict[str, Any]]:
    got = requests.get(
        f"{stack.drp_url}/api/v3/machines",
        headers={"Authorization": f"Bearer {stack.drp_token}"},
        timeout=10,
    )
    got.raise_for_status()
    return [m for m in got.json() if m.get("Context") == DEMO_CONTEXT]


def _status(url: str) -> int:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return 0


def test_every_service_turns_healthy(stack: Stack, docker_engine: docker.DockerClient) -> None:
    def healthy() -> bool:
        health = stack.health(docker_engine)
        return set(health) == SERVICES and all(v == "healthy" for v in health.values())

    try:
        wait_for(healthy, 240, 2, "every service healthy")
    except AssertionError:
        raise AssertionError(f"{stack.health(docker_engine)}\n{_diagnose(stack)}") from None
    _note(f"all {len(SERVICES)} services healthy {stack.since_up()}")


def test_redis_wants_its_password_and_keeps_its_data(stack: Stack) -> None:
    url = f"redis://127.0.0.1:{stack.ports['redis']}/0"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url, socket_timeout=5).ping()
    client = redis.Redis.from_url(
        url, password=stack.redis_password, decode_responses=True, socket_timeout=5
    )
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.close()


def test_demo_machines_get_containers_on_nodes_of_their_tag(
    stack: Stack, docker_engine: docker.DockerClient
) -> None:
    def placed() -> list[dict[str, Any]]:
        machines = _machines(stack)
        running = {
            c.labels["ctxpool.uuid"]: c
            for c in stack.context_containers(docker_engine)
            if c.status == "running"
        }
        done = [
            m
            for m in machines
            if m["Uuid"] in running and m.get("Params", {}).get(OWNER_PARAM) in stack.nodes.values()
        ]
        return machines if len(done) == DEMO_MACHINES == len(machines) else []

    try:
        machines = wait_for(placed, 240, 2, f"{DEMO_MACHINES} demo machines placed")
    except AssertionError:
        raise AssertionError(_diagnose(stack)) from None
    _note(f"{DEMO_MACHINES} machines have their containers {stack.since_up()}")
    containers = {c.labels["ctxpool.uuid"]: c for c in stack.context_containers(docker_engine)}
    for machine in machines:
        tag = machine["Params"][TAG_PARAM]
        container = containers[machine["Uuid"]]
        node = stack.nodes[tag]
        # the node of the machine's tag runs it, and told DRP so
        assert container.labels["ctxpool.owner"] == node, machine["Name"]
        assert machine["Params"][OWNER_PARAM] == node, machine["Name"]
        assert container.name == f"drp-{DEMO_CONTEXT}-{machine['Uuid']}"
        env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
        assert env["RS_UUID"] == machine["Uuid"]
        assert env["RS_ENDPOINTS"].split()[0] == stack.drp_url  # reachable from the host engine
    assert len(containers) == DEMO_MACHINES  # one container per machine, no strays


def test_each_context_agent_writes_back_to_the_simulator(
    stack: Stack, docker_engine: docker.DockerClient
) -> None:
    def seen() -> list[dict[str, Any]]:
        machines = _machines(stack)
        done = [m for m in machines if isinstance(m.get("Params", {}).get(AGENT_PARAM), str)]
        return machines if len(done) == DEMO_MACHINES else []

    try:
        machines = wait_for(seen, 120, 2, "every demo machine's agent wrote back")
    except AssertionError:
        raise AssertionError(_diagnose(stack)) from None
    _note(f"every agent wrote {AGENT_PARAM} {stack.since_up()}")
    containers = {c.labels["ctxpool.uuid"]: c for c in stack.context_containers(docker_engine)}
    for machine in machines:
        host, _, _ = machine["Params"][AGENT_PARAM].partition(" ")
        # written from inside that machine's own container, by the injected drpcli
        assert host == containers[machine["Uuid"]].attrs["Config"]["Hostname"]
        mounts = {m["Destination"]: m for m in containers[machine["Uuid"]].attrs["Mounts"]}
        source = mounts["/usr/bin/drpcli"]["Source"]
        assert source.startswith(str(stack.state_dir)), source  # a host path under the state dir


def test_flower_wants_credentials_and_sees_workers_and_task_events(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.ports['flower']}"
    auth = (stack.flower_user, stack.flower_password)
    assert requests.get(f"{base}/", timeout=10).status_code == 401
    wrong = (stack.flower_user, "wrong")
    assert requests.get(f"{base}/", auth=wrong, timeout=10).status_code == 401
    assert requests.get(f"{base}/api/workers", timeout=10).status_code == 401
    assert requests.get(f"{base}/", auth=auth, timeout=10).status_code == 200

    def workers() -> set[str]:
        got = requests.get(f"{base}/api/workers", params={"refresh": 1}, auth=auth, timeout=30)
        return {name.split("@")[0] for name in got.json()} if got.ok else set()

    assert wait_for(workers, 60, 2, "Flower lists both nodes") == set(stack.nodes.values())

    def reconciles() -> list[str]:
        got = requests.get(f"{base}/api/tasks", auth=auth, timeout=30)
        tasks = got.json().items() if got.ok else []
        return [tid for tid, t in tasks if t.get("name") == "tasks.contexts.reconcile"]

    # the nodes run with task events (-E): Flower saw their reconciles
    seen = set(wait_for(reconciles, 60, 2, "Flower shows reconcile tasks"))

    # --persistent: what it saw survives its restart (events are not sent again)
    stack.compose("restart", "-t", "20", "flower")
    wait_for(lambda: _status(f"{base}/healthcheck") == 200, 60, 1, "Flower back")
    assert seen <= set(reconciles())


def test_the_exporter_reports_both_nodes(stack: Stack) -> None:
    text = requests.get(f"http://127.0.0.1:{stack.ports['metrics']}/metrics", timeout=10).text
    for node in stack.nodes.values():
        assert f'ctxpool_node_up{{node="{node}"}} 1.0' in text


def test_no_secret_in_logs_or_images(stack: Stack, docker_engine: docker.DockerClient) -> None:
    logs = stack.compose("logs", "--no-color").stdout
    assert "ready." in logs  # the logs are there at all
    image = docker_engine.images.get(APP_IMAGE)
    baked = json.dumps(image.attrs) + json.dumps(image.history())
    for secret in stack.secrets:
        assert secret not in logs
        assert secret not in baked

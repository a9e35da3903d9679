"""Fault 6 of issue 8: Redis comes back empty, or the bridge is ``kill -9``ed, while DRP changes.

A Redis server of the test's own (broker and state store) is killed while two nodes and the
bridge run; DRP deletes one machine and adds one meanwhile; Redis restarts with no data
(desired state, membership and kombu's bindings all gone). Within one resync period the
containers match DRP again: survivors keep their container ids, no machine ever has two
containers, no nudge went to kombu's dead-letter queue, and the deleted machine's container
goes too (a completed resync, not ``ORPHAN_GRACE_S``, ends its grace). Then the same with the
bridge killed and restarted while DRP changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import redis

from broker_bridge.drpsim import DrpSim
from tests import support
from tests.support import BridgeProcess, RedisServer, Worker

pytestmark = pytest.mark.integration

TAG = "docker-context/tag"
RESYNC_S = 10.0
SWEEP_S = 3.0
MEMBERSHIP_TTL_S = 2.0
#: One resync period, plus the bridge's wait for nodes to re-register after a data loss and
#: two node sweeps (adoption, then removal of the proven orphan).
DEADLINE_S = RESYNC_S + MEMBERSHIP_TTL_S + 2 * SWEEP_S + 4


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


def _by_uuid(client: docker.DockerClient, ctx: str) -> dict[str, list[str]]:
    """uuid -> ids of its containers (any state) on the engine."""
    out: dict[str, list[str]] = {}
    for attrs in support.container_state(client, f"drp-{ctx}-").values():
        out.setdefault(attrs["Config"]["Labels"]["ctxpool.uuid"], []).append(attrs["Id"])
    return out


def _converge_watching_duplicates(
    client: docker.DockerClient, ctx: str, want: set[str], deadline_s: float
) -> dict[str, str]:
    """Wait until exactly ``want`` have one container each; fail at once on a duplicate."""
    end = time.monotonic() + deadline_s
    while True:
        seen = _by_uuid(client, ctx)
        doubled = {u: ids for u, ids in seen.items() if len(ids) > 1}
        assert not doubled, f"machines with two containers: {doubled}"
        if set(seen) == want:
            return {u: ids[0] for u, ids in seen.items()}
        if time.monotonic() > end:
            raise AssertionError(
                f"after {deadline_s:.0f}s: have {sorted(seen)}, want {sorted(want)}"
            )
        time.sleep(0.2)


def test_redis_lost_and_bridge_killed_while_drp_changes(
    own_redis: RedisServer,
    start_worker: Callable[..., Worker],
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
    tmp_path: Path,
    pool_env: dict[str, str],
) -> None:
    env = {
        **pool_env,
        "CTXPOOL_BROKER_URL": own_redis.url,
        "CTXPOOL_REDIS_URL": own_redis.url,
        "CTXPOOL_HEARTBEAT_S": "0.5",
        "CTXPOOL_HEARTBEAT_TTL_S": str(MEMBERSHIP_TTL_S),
        "CTXPOOL_SWEEP_S": str(SWEEP_S),
        "CTXPOOL_RESYNC_S": str(RESYNC_S),
        "CTXPOOL_BRIDGE_METRICS_PORT": "0",
    }
    with DrpSim() as sim:
        env |= {"CTXPOOL_DRP_URL": sim.url, "CTXPOOL_DRP_TOKEN": sim.token}
        start_worker("rl-a", ["tag-ci"], **env)
        start_worker("rl-b", ["tag-ci"], **env)
        sim.put_context(ctx_name, engine="docker-context", image=test_image)
        uuids = [sim.create_machine(f"m{i}", ctx_name, {TAG: "ci"})["Uuid"] for i in range(4)]
        bridge = BridgeProcess(env, tmp_path).start()
        try:
            before = _converge_watching_duplicates(docker_engine, ctx_name, set(uuids), 60)

            # Redis dies; DRP changes meanwhile; Redis comes back with no data at all
            own_redis.kill()
            sim.delete_machine(uuids[0])
            added = sim.create_machine("m-new", ctx_name, {TAG: "ci"})["Uuid"]
            time.sleep(2)
            own_redis.start()
            restarted = time.monotonic()
            want = {*uuids[1:], added}
            after = _converge_watching_duplicates(docker_engine, ctx_name, want, DEADLINE_S)
            took_s = time.monotonic() - restarted
            for uuid in uuids[1:]:
                assert after[uuid] == before[uuid], f"{uuid} got a new container"
            client = redis.Redis.from_url(own_redis.url)
            assert client.llen("ae.undeliver") == 0, "a nudge had no route (lost binding)"
            print(f"converged {took_s:.1f}s after Redis came back empty")

            # the bridge is kill -9ed; DRP changes; the bridge comes back
            bridge.kill()
            sim.delete_machine(uuids[1])
            added2 = sim.create_machine("m-new2", ctx_name, {TAG: "ci"})["Uuid"]
            bridge = BridgeProcess(env, tmp_path).start()
            want = {*uuids[2:], added, added2}
            again = _converge_watching_duplicates(docker_engine, ctx_name, want, DEADLINE_S)
            for uuid in (*uuids[2:], added):
                assert again[uuid] == after[uuid], f"{uuid} got a new container"
        except BaseException:
            print(f"===== bridge log =====\n{bridge.log()[-6000:]}")
            raise
        finally:
            bridge.stop()

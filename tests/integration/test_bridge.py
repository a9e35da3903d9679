"""The bridge end to end: DRP simulator + bridge + real worker nodes + the real Docker engine."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import docker
import pytest
import redis

from broker_bridge.drpsim import DrpSim
from pool.contexts.store import StateStore
from tests import support
from tests.support import Worker, wait_for

pytestmark = pytest.mark.integration

OWNER = "docker-context/owner"
TAG = "docker-context/tag"


def _containers(client: docker.DockerClient, ctx: str) -> dict[str, dict[str, Any]]:
    return {
        attrs["Config"]["Labels"]["ctxpool.uuid"]: attrs
        for attrs in support.container_state(client, f"drp-{ctx}-").values()
        if attrs["State"]["Running"]
    }


def _env(attrs: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in attrs["Config"]["Env"])


def test_machines_become_containers_on_their_tag_nodes(
    sim: DrpSim,
    drp_env: dict[str, str],
    run_bridge: Callable[..., None],
    start_worker: Callable[..., Worker],
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
) -> None:
    start_worker("b-ci", ["tag-ci"], **drp_env)
    start_worker("b-audit", ["tag-audit"], **drp_env)
    sim.put_context(ctx_name, engine="docker-context", image=test_image)
    sim.put_context("elsewhere", engine="other-engine", image=test_image)
    run_bridge(resync_s=60)
    machines = [
        sim.create_machine(f"m{i}", ctx_name, {TAG: "ci" if i % 2 else "audit"}) for i in range(20)
    ]
    sim.create_machine("not-ours", "elsewhere", {TAG: "ci"})
    sim.create_machine("no-context", "", {TAG: "ci"})
    wait_for(lambda: len(_containers(docker_engine, ctx_name)) == 20, 90, 0.5, what="20 up")
    running = _containers(docker_engine, ctx_name)
    for m in machines:
        attrs = running[m["Uuid"]]
        tag = m["Params"][TAG]
        assert attrs["Config"]["Labels"]["ctxpool.owner"] == f"b-{tag}"
        env = _env(attrs)
        assert env["RS_UUID"] == m["Uuid"]
        assert env["RS_CONTEXT"] == ctx_name
        assert env["RS_TOKEN"].startswith(f"mt-{m['Uuid'][:8]}")
        assert env["RS_ENDPOINTS"] == sim.url
        assert env["RS_ENDPOINT"] == sim.url
    wait_for(
        lambda: all(
            (sim.get(m["Uuid"]) or {}).get("Params", {}).get(OWNER) == f"b-{m['Params'][TAG]}"
            for m in machines
        ),
        30,
        0.2,
        what="owners written back to DRP",
    )
    for m in machines:
        sim.delete_machine(m["Uuid"])
    wait_for(lambda: not support.container_state(docker_engine, f"drp-{ctx_name}-"), 60, 0.5)


def test_drops_and_a_store_flush_converge_without_duplicates(
    drp_env: dict[str, str],
    sim: DrpSim,
    run_bridge: Callable[..., None],
    start_worker: Callable[..., Worker],
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
    redis_conn: redis.Redis,
    store: StateStore,
) -> None:
    """30% of events dropped: one resync period later all is right. Then Redis loses
    everything (FLUSHDB of the state store's database): the bridge and nodes rebuild it, and
    no container is created twice."""
    start_worker("d-1", ["tag-ci"], **drp_env)
    start_worker("d-2", ["tag-ci"], **drp_env)
    sim.drop_share = 0.3
    sim.put_context(ctx_name, engine="docker-context", image=test_image)
    resync_s = 6.0
    run_bridge(resync_s=resync_s)
    # events flow (and some are dropped) only once the bridge registered on the websocket
    wait_for(
        lambda: any(s.wants("machines", "create", "*") for s in list(sim.subscribers)),
        30,
        0.05,
        what="the bridge registered for machine events",
    )
    machines = [sim.create_machine(f"m{i}", ctx_name, {TAG: "ci"}) for i in range(12)]
    for m in machines[:4]:
        sim.delete_machine(m["Uuid"])
    sim.update_machine(machines[4]["Uuid"], Context="")
    want = {m["Uuid"] for m in machines[5:]}
    changed_at = time.monotonic()
    wait_for(
        lambda: set(_containers(docker_engine, ctx_name)) == want,
        resync_s + 30,
        0.5,
        what="convergence despite dropped events",
    )
    # within one resync period (plus the nodes' own create/remove time)
    assert time.monotonic() - changed_at <= resync_s + 5
    assert sim.events_dropped > 0
    wait_for(lambda: all(sim.get(u)["Params"].get(OWNER) for u in want), 30, 0.2, what="owners")
    before = {u: a["Id"] for u, a in _containers(docker_engine, ctx_name).items()}

    redis_conn.flushdb()  # the state store's database: desired state, owners, leases, all
    wait_for(
        lambda: all(store.get_desired(u) is not None for u in want),
        resync_s + 30,
        0.5,
        what="desired state rebuilt by the resync",
    )
    wait_for(
        lambda: {s.uuid for s in store.statuses(list(want)) if s.state.value == "running"} == want,
        60,
        0.5,
        what="every context running again",
    )
    after = {u: a["Id"] for u, a in _containers(docker_engine, ctx_name).items()}
    assert after == before  # same containers: none recreated, none duplicated
    assert len(support.container_state(docker_engine, f"drp-{ctx_name}-")) == len(want)


def test_cluster_count_drives_members_and_containers(
    sim: DrpSim,
    drp_env: dict[str, str],
    run_bridge: Callable[..., None],
    start_worker: Callable[..., Worker],
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
) -> None:
    start_worker("c-1", ["tag-batch"], **drp_env)
    start_worker("c-2", ["tag-batch"], **drp_env)
    sim.put_context(ctx_name, engine="docker-context", image=test_image)
    run_bridge(resync_s=60)
    cluster = sim.create_machine(
        "batch",
        ctx_name,
        {"resource/broker": "context-broker", TAG: "batch", "cluster/count": 5},
        kind="clusters",
    )
    ignored = sim.create_machine(  # another broker's cluster: not ours
        "foreign", ctx_name, {"resource/broker": "other", "cluster/count": 3}, kind="clusters"
    )

    def members() -> list[dict[str, Any]]:
        return [m for m in sim.list() if m["Params"].get("ctxpool/cluster") == cluster["Uuid"]]

    def running() -> int:
        return len(_containers(docker_engine, ctx_name))

    wait_for(lambda: len(members()) == 5 and running() == 5, 90, 0.5, what="5 members up")
    assert sorted(m["Name"] for m in members()) == [f"batch-{i}" for i in range(1, 6)]
    assert {m["Params"][TAG] for m in members()} == {"batch"}
    recorded = wait_for(
        lambda: sim.get(cluster["Uuid"], "clusters")["Params"].get("cluster/machines"), 10, 0.1
    )
    assert recorded == [f"batch-{i}" for i in range(1, 6)]
    owners = Counter(
        a["Config"]["Labels"]["ctxpool.owner"]
        for a in _containers(docker_engine, ctx_name).values()
    )
    assert sorted(owners.values()) == [2, 3]  # spread over both batch nodes
    assert set(owners) == {"c-1", "c-2"}

    sim.set_param(cluster["Uuid"], "cluster/count", 2, kind="clusters")
    wait_for(lambda: len(members()) == 2 and running() == 2, 60, 0.5, what="down to 2")
    assert sorted(m["Name"] for m in members()) == ["batch-1", "batch-2"]  # newest removed

    sim.set_param(cluster["Uuid"], "cluster/count", 0, kind="clusters")
    wait_for(lambda: not members() and running() == 0, 60, 0.5, what="drained")
    assert not [m for m in sim.list() if m["Params"].get("ctxpool/cluster") == ignored["Uuid"]]

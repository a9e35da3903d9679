"""Drain and quarantine with real nodes: `ctxpool drain|undrain|quarantine|unquarantine`."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import docker
import pytest

from pool.admin import AdminState
from pool.contexts.api import ContextAPI
from pool.contexts.models import ContextSpec, RunState
from pool.contexts.store import StateStore
from tests.support import Worker, wait_for

pytestmark = pytest.mark.integration

#: Short enough that a stuck handoff shows, long enough for a create on a busy CI machine.
STEP_TIMEOUT_S = "30"


def _spec(ctx: str, uuid: str, image: str, tag: str = "ci") -> ContextSpec:
    return ContextSpec(uuid=uuid, context=ctx, image=image, tag=tag, token="t")


def _ctxpool(env: dict[str, str], *args: str, timeout_s: float = 60) -> str:
    """Run the CLI as an operator would, in a process of its own; return its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "pool.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, f"ctxpool {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _running_on(store: StateStore, uuids: list[str], node: str) -> Callable[[], bool]:
    def probe() -> bool:
        statuses = store.statuses(uuids)
        return all(s.owner == node and s.state is RunState.RUNNING for s in statuses)

    return probe


def _reported(
    store: StateStore, node: str, state: AdminState, detail: str = ""
) -> Callable[[], bool]:
    """The node's own record (its heartbeat) reports ``state`` (and ``detail``)."""

    def probe() -> bool:
        record = store.members.membership(node)
        return record is not None and record.admin.state is state and detail in record.admin.detail

    return probe


def _container_ids(client: docker.DockerClient, ctx: str) -> dict[str, str]:
    rows = client.api.containers(all=True, filters={"name": f"drp-{ctx}-"})
    return {r["Labels"]["ctxpool.uuid"]: r["Id"] for r in rows}


@dataclass
class Sampler:
    """Samples the Docker engine's containers of one test (label ``ctxpool.uuid``) in a
    thread, as fast as it can (at least every 0.1 s), and keeps per sample how many
    containers each machine has."""

    client: docker.DockerClient
    ctx: str
    samples: list[tuple[float, Counter[str], Counter[str]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            rows = self.client.api.containers(
                all=True, filters={"label": "ctxpool.uuid", "name": f"drp-{self.ctx}-"}
            )
            running = Counter(r["Labels"]["ctxpool.uuid"] for r in rows if r["State"] == "running")
            present = Counter(r["Labels"]["ctxpool.uuid"] for r in rows)
            self.samples.append((t, running, present))
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - t)))

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def max_gap_s(self) -> float:
        times = [t for t, _, _ in self.samples]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def test_drain_moves_ten_contexts_one_at_a_time_never_two_agents(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
    pool_env: dict[str, str],
) -> None:
    env = {"CTXPOOL_DRAIN_STEP_TIMEOUT_S": STEP_TIMEOUT_S}
    a = start_worker("dr-a", ["tag-ci"], **env)
    uuids = sorted(str(uuidlib.uuid4()) for _ in range(10))
    for uuid in uuids:
        # as the bridge does once dr-a claimed them: DRP's owner param names dr-a
        api.apply(_spec(ctx_name, uuid, test_image), preferred="dr-a")
    wait_for(_running_on(store, uuids, "dr-a"), 60, what="10 contexts on dr-a")
    b = start_worker("dr-b", ["tag-ci"], **env)
    wait_for(_reported(store, "dr-b", AdminState.ACTIVE), what="dr-b heartbeat")

    with Sampler(docker_engine, ctx_name) as sampler:
        started = time.monotonic()
        out = _ctxpool(
            pool_env, "drain", "dr-a", "--why", "kernel update", "--wait", "--timeout", "120",
            timeout_s=180,
        )  # fmt: skip
        took_s = time.monotonic() - started
        time.sleep(1.0)  # a few samples after the end, too

    # every sample: no machine ever had two containers (running or not)
    assert sampler.samples
    duration_s = sampler.samples[-1][0] - sampler.samples[0][0]
    rate = len(sampler.samples) / duration_s
    assert rate >= 5.0, f"only {rate:.1f} samples/s"
    assert sampler.max_gap_s() < 0.5
    doubles = [(t, c) for t, c, _ in sampler.samples if c and max(c.values()) > 1]
    assert not doubles, f"two running containers of one machine: {doubles[:3]}"
    assert all(not p or max(p.values()) <= 1 for _, _, p in sampler.samples)
    # one at a time: at most one machine was without its container at any sample
    missing = [len(uuids) - len(running) for _, running, _ in sampler.samples]
    assert max(missing) <= 1, f"{max(missing)} contexts in flight at once"
    assert max(missing) == 1  # ... and the sampler did see the handoffs

    print(
        f"\ndrain of 10 contexts: {took_s:.1f}s, {len(sampler.samples)} samples "
        f"({rate:.1f}/s, longest gap {sampler.max_gap_s() * 1000:.0f} ms)"
    )
    assert "drained" in out
    assert store.members.membership("dr-a").admin.state is AdminState.DRAINED  # type: ignore[union-attr]
    assert _running_on(store, uuids, "dr-b")()
    rows = docker_engine.api.containers(filters={"name": f"drp-{ctx_name}-"})
    assert sorted(r["Labels"]["ctxpool.uuid"] for r in rows) == uuids
    assert {r["Labels"]["ctxpool.owner"] for r in rows} == {"dr-b"}
    assert store.ownership.owned_by("dr-a") == set()
    assert docker_engine.api.containers(all=True, filters={"label": "ctxpool.owner=dr-a"}) == []
    # the handoffs went one by one, each waited for (not repaired by a sweep later)
    assert a.log().count("handed off (node dr-a drains)") == 10
    assert a.log().count("runs on dr-b after") == 10
    assert "not running on another node" not in a.log()
    assert b.alive()

    nodes = _ctxpool(pool_env, "nodes")
    line = next(line for line in nodes.splitlines() if line.startswith("dr-a "))
    assert "drained" in line
    metrics = _ctxpool(pool_env, "metrics", "--port", "0")
    assert 'ctxpool_node_admin_state{node="dr-a",state="drained"} 1.0' in metrics
    assert 'ctxpool_node_admin_state{node="dr-a",state="active"} 0.0' in metrics
    assert 'ctxpool_node_admin_state{node="dr-b",state="active"} 1.0' in metrics


def test_drain_without_another_node_keeps_contexts_across_a_restart_then_undrain(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
    pool_env: dict[str, str],
) -> None:
    env = {"CTXPOOL_DRAIN_STEP_TIMEOUT_S": STEP_TIMEOUT_S}
    a = start_worker("dn-a", ["tag-ci"], **env)
    uuids = sorted(str(uuidlib.uuid4()) for _ in range(3))
    for uuid in uuids:
        api.apply(_spec(ctx_name, uuid, test_image))
    wait_for(_running_on(store, uuids, "dn-a"), 60, what="3 contexts on dn-a")
    before = _container_ids(docker_engine, ctx_name)

    out = _ctxpool(pool_env, "drain", "dn-a", "--why", "rack move")
    assert "node dn-a: draining" in out
    waiting = "waiting: no other node of tag ci"
    wait_for(_reported(store, "dn-a", AdminState.DRAINING, waiting), what="waiting reported")
    time.sleep(2.0)  # several drain steps: nothing moves, nothing is dropped
    assert _container_ids(docker_engine, ctx_name) == before
    assert _running_on(store, uuids, "dn-a")()
    record = store.members.membership("dn-a")
    assert record is not None
    assert record.stats.gated
    assert record.admin.remaining == 3
    line = next(x for x in _ctxpool(pool_env, "nodes").splitlines() if x.startswith("dn-a "))
    assert "draining (3 left: waiting: no other node of tag ci (3); rack move)" in line

    # the order survives a restart of the node: it comes back draining, intake closed
    incarnation = record.incarnation
    a.stop()
    a = start_worker("dn-a", ["tag-ci"], **env)

    def restarted_draining() -> bool:
        r = store.members.membership("dn-a")
        return bool(
            r and r.incarnation != incarnation and r.stats.gated and waiting in r.admin.detail
        )

    wait_for(restarted_draining, what="restarted node still draining")
    assert _container_ids(docker_engine, ctx_name) == before
    # a new context of its tag is not claimed by it (it waits in the broker for another node)
    late = str(uuidlib.uuid4())
    api.apply(_spec(ctx_name, late, test_image), preferred="dn-a")
    time.sleep(2.0)
    assert store.ownership.owner(late) is None
    assert late not in _container_ids(docker_engine, ctx_name)

    # another node of the tag arrives: the drain completes, the waiting context lands there
    start_worker("dn-b", ["tag-ci"], **env)
    wait_for(_reported(store, "dn-a", AdminState.DRAINED), 90, what="dn-a drained")
    wait_for(_running_on(store, [*uuids, late], "dn-b"), 30, what="all on dn-b")
    assert docker_engine.api.containers(all=True, filters={"label": "ctxpool.owner=dn-a"}) == []

    # undrain: it takes work again, from its tag queue as well (dn-b is quarantined)
    assert "was draining" in _ctxpool(pool_env, "undrain", "dn-a")
    _ctxpool(pool_env, "quarantine", "dn-b", "--why", "make room")
    wait_for(_reported(store, "dn-b", AdminState.QUARANTINED), what="dn-b quarantined")

    def dn_a_open() -> bool:
        r = store.members.membership("dn-a")
        return bool(r and r.admin.state is AdminState.ACTIVE and not r.stats.gated)

    wait_for(dn_a_open, what="dn-a open again")
    fresh = [str(uuidlib.uuid4()) for _ in range(2)]
    for uuid in fresh:
        api.apply(_spec(ctx_name, uuid, test_image))
    wait_for(_running_on(store, fresh, "dn-a"), 30, what="new contexts on dn-a")
    assert a.alive()


def test_quarantine_keeps_contexts_sends_new_ones_elsewhere_and_survives_restart(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
    pool_env: dict[str, str],
) -> None:
    a = start_worker("q-a", ["tag-ci"])
    kept = sorted(str(uuidlib.uuid4()) for _ in range(3))
    for uuid in kept:
        api.apply(_spec(ctx_name, uuid, test_image))
    wait_for(_running_on(store, kept, "q-a"), 60, what="3 contexts on q-a")
    start_worker("q-b", ["tag-ci"])
    before = _container_ids(docker_engine, ctx_name)

    out = _ctxpool(pool_env, "quarantine", "q-a", "--for", "2h", "--why", "flaky disk")
    assert "node q-a: quarantined for 2h" in out
    ttl_ms = store.redis.pttl(store.keys.node_admin("q-a"))
    assert 7_100_000 < ttl_ms <= 7_200_000
    wait_for(_reported(store, "q-a", AdminState.QUARANTINED), what="quarantine reported")
    wait_for(lambda: store.members.membership("q-a").stats.gated, what="q-a gated")  # type: ignore[union-attr]

    # new contexts go to q-b, even one whose preferred node (DRP's owner param) is q-a
    fresh = [str(uuidlib.uuid4()) for _ in range(4)]
    api.apply(_spec(ctx_name, fresh[0], test_image), preferred="q-a")
    for uuid in fresh[1:]:
        api.apply(_spec(ctx_name, uuid, test_image))
    wait_for(_running_on(store, fresh, "q-b"), 30, what="new contexts on q-b")
    # q-a keeps what it ran, untouched
    assert _running_on(store, kept, "q-a")()
    now_ids = _container_ids(docker_engine, ctx_name)
    assert {u: now_ids[u] for u in kept} == {u: before[u] for u in kept}

    line = next(x for x in _ctxpool(pool_env, "nodes").splitlines() if x.startswith("q-a "))
    assert "quarantined (until " in line
    assert "flaky disk" in line
    metrics = _ctxpool(pool_env, "metrics", "--port", "0")
    assert 'ctxpool_node_admin_state{node="q-a",state="quarantined"} 1.0' in metrics

    # a restart keeps the quarantine, and the contexts
    a.stop()
    a = start_worker("q-a", ["tag-ci"])
    wait_for(_reported(store, "q-a", AdminState.QUARANTINED), what="still quarantined")
    wait_for(lambda: store.members.membership("q-a").stats.gated, what="q-a gated")  # type: ignore[union-attr]
    late = str(uuidlib.uuid4())
    api.apply(_spec(ctx_name, late, test_image), preferred="q-a")
    wait_for(_running_on(store, [late], "q-b"), 30, what="late context on q-b")
    wait_for(_running_on(store, kept, "q-a"), 30, what="kept contexts on q-a")
    now_ids = _container_ids(docker_engine, ctx_name)
    assert {u: now_ids[u] for u in kept} == {u: before[u] for u in kept}

    assert "was quarantined" in _ctxpool(pool_env, "unquarantine", "q-a")
    wait_for(_reported(store, "q-a", AdminState.ACTIVE), what="q-a active")
    assert a.alive()


class FakeEngine:
    """Containers by uuid -> owner label: what the drain needs of the engine."""

    def __init__(self, containers: dict[str, str]) -> None:
        self.containers = containers
        self.removed: list[str] = []

    def remove(self, uuid: str, owner: str) -> int:
        if self.containers.get(uuid) == owner:
            del self.containers[uuid]
            self.removed.append(uuid)
            return 1
        return 0

    def list_containers(self, owner: str | None = None, uuid: str | None = None) -> list[str]:
        return [
            u
            for u, o in self.containers.items()
            if (owner is None or o == owner) and (uuid is None or u == uuid)
        ]


def test_drainer_one_handoff_at_a_time_waits_then_times_out(
    store: StateStore, pool_env: dict[str, str], ctx_name: str, test_image: str
) -> None:
    """The drain's mechanism without workers: real Redis, a fake engine, a manual clock."""
    from pool.admin import AdminMode, AdminStatus, NodeAdmin
    from pool.contexts.models import Desired, Nudge
    from pool.contexts.outcomes import NodeIdentity
    from pool.contexts.reconcile import Reconciler
    from pool.membership import Membership, NodeStats
    from pool.node.drain import Drainer
    from pool.settings import Settings

    settings = Settings(
        redis_url=pool_env["CTXPOOL_REDIS_URL"],
        key_prefix=pool_env["CTXPOOL_KEY_PREFIX"],
        drain_step_timeout_s=10,
    )
    u1, u2, u3, parked = "m1", "m2", "m3", "m4"
    engine = FakeEngine({u1: "a", u2: "a", u3: "a"})
    sent: list[tuple[Nudge, str]] = []
    node = NodeIdentity(name="a", tags=frozenset({"ci", "gpu"}), capacity=10)
    reconciler = Reconciler(store, engine, settings, node, lambda n, q: sent.append((n, q)))  # type: ignore[arg-type]
    for uuid, tag in ((u1, "ci"), (u2, "ci"), (u3, "gpu"), (parked, "ci")):
        store.put_desired(uuid, Desired.PRESENT, _spec(ctx_name, uuid, test_image, tag))
        assert store.ownership.claim(uuid, "a", None, 10).ok
        store.set_status(uuid, owner="a", state=RunState.RUNNING.value)
    store.ownership.park(parked, "a")

    def beat(name: str, tags: list[str], admin: AdminStatus) -> None:
        rec = Membership(
            node=name, worker_id=f"{name}@h", incarnation="i", tags=tags,
            stats=NodeStats(capacity=10), admin=admin,
        )  # fmt: skip
        store.members.heartbeat(rec, ttl_s=60)

    now = [0.0]
    drainer = Drainer(reconciler, clock=lambda: now[0])
    order = NodeAdmin(mode=AdminMode.DRAINING, why="test", since=0.0)
    store.admin.drain("a", "test")
    beat("a", ["ci", "gpu"], AdminStatus())
    beat("b", ["ci"], AdminStatus())
    # its own record does not say draining yet: nothing moves
    assert drainer.step(order).detail == "announcing the drain"
    assert engine.removed == []
    beat("a", ["ci", "gpu"], AdminStatus(state=AdminState.DRAINING))

    first = drainer.step(order)
    assert first.detail == f"handing off {u1} (tag ci)"
    assert engine.removed == [u1]
    assert store.ownership.owner(u1) is None
    assert store.ownership.owner(parked) is None  # parked: disowned, nothing to remove
    assert store.status(u1).state is RunState.PENDING
    assert [(n.uuid, q) for n, q in sent] == [(parked, "tag-ci"), (u1, "tag-ci")]
    # waits: no second handoff before u1 runs elsewhere
    assert drainer.step(order).detail.startswith(f"waiting for {u1}")
    assert engine.removed == [u1]
    # b runs it: the next step hands off u2
    assert store.ownership.claim(u1, "b", None, 10).ok
    store.set_status(u1, owner="b", state=RunState.RUNNING.value)
    assert drainer.step(order).detail == f"handing off {u2} (tag ci)"
    # nobody takes u2: after drain_step_timeout_s the drain goes on; u3 has no other node
    now[0] = 11.0
    waiting = drainer.step(order)
    assert waiting.state is AdminState.DRAINING
    assert waiting.detail == "waiting: no other node of tag gpu (1)"
    assert waiting.remaining == 1
    assert engine.containers == {u3: "a"}  # kept: nothing is dropped
    # a quarantined node is no target either (its order counts before its next heartbeat)
    beat("c", ["gpu"], AdminStatus())
    store.admin.quarantine("c", "disk")
    assert drainer.step(order).detail == "waiting: no other node of tag gpu (1)"
    store.admin.lift("c")
    assert drainer.step(order).detail == f"handing off {u3} (tag gpu)"
    store.ownership.claim(u3, "c", None, 10)
    store.set_status(u3, owner="c", state=RunState.RUNNING.value)
    drained = drainer.step(order)
    assert (drained.state, drained.remaining) == (AdminState.DRAINED, 0)
    # the reconciler of a draining node refuses a fresh claim: it requeues the nudge
    sent.clear()
    store.put_desired("m5", Desired.PRESENT, _spec(ctx_name, "m5", test_image), preferred="a")
    reconciler.reconcile(Nudge(uuid="m5"))
    assert store.ownership.owner("m5") is None
    assert [(n.uuid, n.hops, q) for n, q in sent] == [("m5", 1, "tag-ci")]

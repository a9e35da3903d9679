"""Level-triggered convergence: message order, duplicates, tags, capacity, crashes."""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Callable

import docker
import pytest

from pool.contexts.api import ContextAPI
from pool.contexts.models import ContextSpec, Desired, Nudge, RunState
from pool.contexts.store import StateStore
from pool.queues import node_queue, tag_queue
from tests import support
from tests.support import Worker, wait_for

pytestmark = pytest.mark.integration


def _spec(ctx: str, uuid: str, image: str, tag: str, version: str = "1") -> ContextSpec:
    return ContextSpec(
        uuid=uuid, context=ctx, image=image, tag=tag, token="t", env={"VERSION": version}
    )


def _containers_by_uuid(client: docker.DockerClient, ctx: str) -> dict[str, list[dict]]:  # type: ignore[type-arg]
    out: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for attrs in support.container_state(client, f"drp-{ctx}-").values():
        out.setdefault(attrs["Config"]["Labels"]["ctxpool.uuid"], []).append(attrs)
    return out


def _converged(
    client: docker.DockerClient, store: StateStore, ctx: str, expect: dict[str, str | None]
) -> Callable[[], bool]:
    """``expect``: uuid -> wanted VERSION env, or None for 'no container'."""

    def probe() -> bool:
        found = _containers_by_uuid(client, ctx)
        for uuid, version in expect.items():
            have = found.get(uuid, [])
            if version is None:
                if have:
                    return False
                continue
            if len(have) != 1 or f"VERSION={version}" not in have[0]["Config"]["Env"]:
                return False
            if have[0]["State"]["Status"] != "running":
                return False
            st = store.status(uuid)
            if st.state is not RunState.RUNNING or st.applied_generation != st.generation:
                return False
        return True

    return probe


def test_reordered_duplicated_and_stale_nudges_converge(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
) -> None:
    start_worker("node-r1", ["tag-ci"], CTXPOOL_SWEEP_S="600")
    publish = api.publish
    a, b, c, d = (str(uuidlib.uuid4()) for _ in range(4))

    # a: remove arrives before apply (nudges reordered); the final desired state is absent
    store.put_desired(a, Desired.PRESENT, _spec(ctx_name, a, test_image, "ci"), generation=1)
    store.put_desired(a, Desired.ABSENT, generation=2)
    publish(Nudge(uuid=a, generation=2), tag_queue("ci"))
    publish(Nudge(uuid=a, generation=1), tag_queue("ci"))

    # b: applied twice, with twenty duplicate nudges racing on four threads
    spec_b = _spec(ctx_name, b, test_image, "ci")
    api.apply(spec_b)
    api.apply(spec_b)
    for _ in range(20):
        publish(Nudge(uuid=b, generation=1), tag_queue("ci"))

    # c: an ordered writer's stale generation is ignored; the newer spec wins
    r5 = api.apply(_spec(ctx_name, c, test_image, "ci", version="5"), generation=5)
    r3 = api.apply(_spec(ctx_name, c, test_image, "ci", version="3"), generation=3)
    assert (r5.generation, r3.generation, r3.changed) == (5, 5, False)
    publish(Nudge(uuid=c, generation=3), tag_queue("ci"))

    # d: v1 then v2 then v3 with the nudges delivered newest first
    for version in ("1", "2", "3"):
        store.put_desired(d, Desired.PRESENT, _spec(ctx_name, d, test_image, "ci", version))
    for gen in (3, 2, 1, 3):
        publish(Nudge(uuid=d, generation=gen), tag_queue("ci"))

    expect: dict[str, str | None] = {a: None, b: "1", c: "5", d: "3"}
    wait_for(_converged(docker_engine, store, ctx_name, expect), 60, what="convergence")
    # and it stays converged once the stragglers are handled
    time.sleep(1.5)
    assert _converged(docker_engine, store, ctx_name, expect)()
    assert store.status(a).state is RunState.REMOVED


def test_contexts_land_on_their_tag_and_capacity_backlog_waits_in_broker(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
) -> None:
    start_worker("node-ci", ["tag-ci"], CTXPOOL_CAPACITY="3")
    start_worker("node-audit", ["tag-audit"])
    ci = [str(uuidlib.uuid4()) for _ in range(5)]
    audit = [str(uuidlib.uuid4()) for _ in range(3)]
    for u in ci:
        api.apply(_spec(ctx_name, u, test_image, "ci"))
    for u in audit:
        api.apply(_spec(ctx_name, u, test_image, "audit"))

    wait_for(lambda: store.ownership.count_owned("node-ci") == 3, 60, what="ci node full")
    wait_for(
        lambda: all(store.status(u).state is RunState.RUNNING for u in audit), 60, what="audit"
    )
    gated = wait_for(
        lambda: (m := store.members.membership("node-ci")) is not None and m.stats.gated,
        10,
        what="ci node gated",
    )
    assert gated
    # the two that do not fit wait in the broker, unclaimed, and stay there; pool sweeps may
    # add a duplicate nudge but never one per context and period
    wait_for(lambda: support.queue_depth(tag_queue("ci")) >= 2, 10, what="backlog in tag-ci")
    time.sleep(7)  # two sweep periods
    assert 2 <= support.queue_depth(tag_queue("ci")) <= 4
    waiting = [u for u in ci if store.ownership.owner(u) is None]
    assert len(waiting) == 2
    for u in audit:
        assert store.ownership.owner(u) == "node-audit"
    for u in ci:
        assert store.ownership.owner(u) in ("node-ci", None)
    found = _containers_by_uuid(docker_engine, ctx_name)
    assert {c[0]["Config"]["Labels"]["ctxpool.owner"] for u, c in found.items() if u in ci} == {
        "node-ci"
    }

    # freeing two slots drains the backlog onto the ci node
    running = [u for u in ci if store.ownership.owner(u) == "node-ci"]
    for u in running[:2]:
        api.remove(u)
    wait_for(
        lambda: (
            all(store.ownership.owner(u) == "node-ci" for u in waiting)
            and all(store.status(u).state is RunState.RUNNING for u in waiting)
        ),
        60,
        what="backlog drained",
    )
    assert store.ownership.count_owned("node-ci") == 3


@pytest.mark.parametrize("recovery", ["restart", "takeover"])
def test_kill9_during_creates_leaves_exactly_one_correct_container(
    recovery: str,
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
) -> None:
    victim = start_worker("node-k1", ["tag-ci"], CTXPOOL_SWEEP_S="2")
    uuids = [str(uuidlib.uuid4()) for _ in range(12)]
    for u in uuids:
        api.apply(_spec(ctx_name, u, test_image, "ci"))
    # kill while creates are in flight: after the first containers exist, before all do
    wait_for(
        lambda: len(support.container_state(docker_engine, f"drp-{ctx_name}-")) >= 2,
        30,
        interval_s=0.01,
        what="first creates",
    )
    victim.kill()
    started = len(support.container_state(docker_engine, f"drp-{ctx_name}-"))
    assert started < len(uuids), "the kill came too late to interrupt creates"

    if recovery == "restart":
        start_worker("node-k1", ["tag-ci"], CTXPOOL_SWEEP_S="2")
        survivor = "node-k1"
    else:
        start_worker("node-k2", ["tag-ci"], CTXPOOL_SWEEP_S="2")
        survivor = "node-k2"

    expect: dict[str, str | None] = dict.fromkeys(uuids, "1")
    wait_for(_converged(docker_engine, store, ctx_name, expect), 90, what="recovery")
    found = _containers_by_uuid(docker_engine, ctx_name)
    for u in uuids:
        assert len(found[u]) == 1
        assert found[u][0]["Config"]["Labels"]["ctxpool.owner"] == survivor
        assert store.ownership.owner(u) == survivor
    assert store.ownership.count_owned(survivor) == len(uuids)
    if recovery == "takeover":
        assert store.ownership.count_owned("node-k1") == 0


def test_nudge_for_a_live_owner_is_forwarded(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
) -> None:
    # no periodic sweep could converge the update instead of the forwarded nudge
    start_worker("node-f1", ["tag-ci"], CTXPOOL_SWEEP_S="3600")
    u = str(uuidlib.uuid4())
    api.apply(_spec(ctx_name, u, test_image, "ci"))
    wait_for(lambda: store.ownership.owner(u) == "node-f1", 30, what="claimed")
    f2 = start_worker("node-f2", ["tag-ci", "tag-other"], CTXPOOL_SWEEP_S="3600")
    # a new spec whose nudge reaches the wrong node: it is forwarded to node-f1
    store.put_desired(u, Desired.PRESENT, _spec(ctx_name, u, test_image, "ci", version="2"))
    api.publish(Nudge(uuid=u), node_queue("node-f2"))
    wait_for(_converged(docker_engine, store, ctx_name, {u: "2"}), 30, what="forwarded update")
    assert store.ownership.owner(u) == "node-f1"
    assert "'forwarded'" in f2.log()  # node-f2 forwarded it (the task's logged outcome)

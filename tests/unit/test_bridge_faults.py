"""Faults of issue 8 on the bridge side, each shown with in-memory fakes (no servers, no Redis):

1. a loop that meets an error outside its one expected family must not die;
5. the coalescer must not release a re-offered key early; cluster locks are freed; shutdown
   converges pending clusters too;
6. a completed resync is recorded (with its start time), an incomplete one is not, and a
   store that lost its data is rewritten;
7. junk in DRP's listing must not end a resync.

Each test here failed on the bridge before the split (commit 26e7176); see the commit message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_bridge.bridge import Bridge, BridgeConfig
from broker_bridge.coalesce import Coalescer
from broker_bridge.models import Context
from tests.bridge_fakes import FakeDrp, FlakySink, MemSink, event, quiet, wait_until

RUNNER = "runner|img/runner:1|ci"


def bridge_for(drp: FakeDrp, sink: Any, **config: Any) -> Bridge:
    config.setdefault("coalesce_s", 0.0)
    config.setdefault("resync_s", 3600.0)
    return Bridge(drp, sink, BridgeConfig(**config))  # type: ignore[arg-type]


async def stop_bridge(run: asyncio.Future[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(run, 10)


# ---- fault 1: loops die silently -------------------------------------------------------------


def test_resync_loop_survives_a_raw_redis_error() -> None:
    """Redis refuses the first resync (a raw ``redis`` error, not a ``DrpError``): the resync
    loop backs off and resyncs again once Redis is back; before, the task ended silently."""
    drp, mem = FakeDrp(), MemSink()
    made = drp.put_machine("m1", params={"docker-context/tag": "ci"})
    sink = FlakySink(mem)
    drp.stream = [[]]  # connect, register (-> resync), stay open

    async def scenario() -> None:
        bridge = bridge_for(drp, sink)
        stop = asyncio.Event()
        run = asyncio.ensure_future(bridge.run(stop))
        try:
            await wait_until(lambda: sink.failures > 0)
            sink.broken = False
            await wait_until(lambda: mem.present(), timeout_s=8)
        finally:
            await stop_bridge(run, stop)

    asyncio.run(scenario())
    assert mem.present() == {made["Uuid"]: RUNNER}


def test_intake_loop_survives_an_error_outside_the_drp_family() -> None:
    """The stream raises ``ConnectionResetError`` (what ``ws.send_str`` raises on a dying
    socket): intake backs off, reconnects and takes the next stream's events."""
    drp, sink = FakeDrp(), MemSink()
    obj = {"Uuid": "u-1", "Name": "m1", "Context": "runner", "Params": {}}
    drp.stream = [
        ConnectionResetError("Cannot write to closing transport"),
        [event("machines", "create", "u-1", obj)],
    ]

    async def scenario() -> None:
        bridge = bridge_for(drp, sink)
        stop = asyncio.Event()
        run = asyncio.ensure_future(bridge.run(stop))
        try:
            await wait_until(lambda: sink.present(), timeout_s=8)
        finally:
            await stop_bridge(run, stop)

    asyncio.run(scenario())
    assert sink.present() == {"u-1": "runner|img/runner:1|default"}


# ---- fault 5: the coalescer releases early; cluster locks; shutdown ------------------------------


def test_a_drained_key_offered_again_waits_its_own_window() -> None:
    now = [0.0]
    c: Coalescer[int] = Coalescer(0.1, clock=lambda: now[0])
    c.offer("m1", 1)  # due at 0.1
    now[0] = 0.05
    assert c.drain_key("m1") == 1  # a resync superseded it
    now[0] = 0.06
    c.offer("m1", 2)  # a new window: due at 0.16
    now[0] = 0.1
    assert c.due() == []  # not at the old due time
    assert c.next_due_in() == pytest.approx(0.06)
    now[0] = 0.16
    assert c.due() == [("m1", 2)]
    assert len(c) == 0


def _held_locks(bridge: Bridge) -> int:
    locks = getattr(bridge, "locks", None)
    if locks is None:
        locks = bridge._locks  # type: ignore[attr-defined]
    return len(locks)


def _cluster(drp: FakeDrp, count: int) -> dict[str, Any]:
    obj = {
        "Uuid": "c-1",
        "Name": "batch",
        "Context": "runner",
        "Params": {"resource/broker": "context-broker", "cluster/count": count,
                   "docker-context/tag": "batch"},
    }  # fmt: skip
    drp.objects["clusters"]["c-1"] = obj
    return obj


def _members(drp: FakeDrp) -> list[str]:
    return sorted(
        m["Name"] for m in drp.machines.values() if m["Params"].get("ctxpool/cluster") == "c-1"
    )


def test_cluster_locks_are_freed() -> None:
    drp, sink = FakeDrp(), MemSink()

    async def scenario() -> Bridge:
        bridge = bridge_for(drp, sink)
        cluster = _cluster(drp, 2)
        for _ in range(3):
            bridge.handle_text(event("clusters", "update", "c-1", cluster))
            await bridge.flush()
            await bridge.idle()
        return bridge

    bridge = asyncio.run(scenario())
    assert _members(drp) == ["batch-1", "batch-2"]
    assert _held_locks(bridge) == 0


def test_shutdown_converges_pending_clusters() -> None:
    """A cluster event still in its coalescing window at shutdown is converged, as machine
    events are."""
    drp, sink = FakeDrp(), MemSink()
    cluster = _cluster(drp, 2)
    drp.objects["clusters"].clear()  # the listing does not know it yet
    drp.stream = [[event("clusters", "create", "c-1", cluster)]]

    async def scenario() -> None:
        bridge = bridge_for(drp, sink, coalesce_s=60.0)
        stop = asyncio.Event()
        run = asyncio.ensure_future(bridge.run(stop))
        await wait_until(lambda: len(bridge.cluster_pending) == 1)
        await stop_bridge(run, stop)

    asyncio.run(scenario())
    assert _members(drp) == ["batch-1", "batch-2"]


# ---- fault 6: Redis comes back empty (the bridge's part) ---------------------------------------


def test_a_completed_resync_is_recorded() -> None:
    drp, sink = FakeDrp(), MemSink()
    for i in range(5):
        drp.put_machine(f"m{i}", params={"docker-context/tag": "ci"})

    async def scenario() -> tuple[float, float]:
        bridge = bridge_for(drp, sink)
        before = time.time()
        await bridge.resync()
        return before, time.time()

    before, after = asyncio.run(scenario())
    assert len(sink.present()) == 5
    assert len(sink.completed) == 1
    assert before <= sink.completed[0] <= after


def test_a_resync_with_a_failed_write_is_not_complete() -> None:
    drp, sink = FakeDrp(), MemSink()
    machines = [drp.put_machine(f"m{i}", params={"docker-context/tag": "ci"}) for i in range(5)]
    drp.failing_tokens = {machines[3]["Uuid"]}

    async def scenario() -> None:
        bridge = bridge_for(drp, sink)
        try:
            await bridge.resync()
        except Exception as exc:  # the split bridge says so; the old one swallowed it
            logging.getLogger(__name__).info("resync: %s", exc)

    asyncio.run(scenario())
    assert len(sink.present()) == 4
    assert sink.completed == []


def test_a_resync_after_the_store_lost_its_data_rewrites_every_context() -> None:
    drp, sink = FakeDrp(), MemSink()
    for i in range(6):
        drp.put_machine(f"m{i}", params={"docker-context/tag": "ci"})

    async def scenario() -> Bridge:
        bridge = bridge_for(drp, sink)
        await bridge.resync()
        sink.desired.clear()  # Redis restarted empty: desired state and epoch gone
        sink.epoch = None
        await bridge.resync()
        return bridge

    asyncio.run(scenario())
    assert sink.present() == drp.expected()
    assert len(sink.completed) == 2


# ---- fault 7: junk in the listing -----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
machine_like = st.fixed_dictionaries(
    {},
    optional={
        "Uuid": json_values | st.sampled_from(["", "x" * 100, "bad uuid/../x", "j-1"]),
        "Name": json_values,
        "Context": json_values | st.just("runner"),
        "Params": json_values
        | st.dictionaries(
            st.sampled_from(["docker-context/tag", "docker-context/owner", "ctxpool/cluster"]),
            json_values,
        ),
        "Profiles": json_values,
        "Meta": json_values,
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=st.lists(json_values | machine_like, min_size=1, max_size=6))
def test_junk_in_the_listing_never_ends_a_resync(junk: list[Any]) -> None:
    drp, sink = FakeDrp(), MemSink()
    good = [drp.put_machine(f"m{i}", params={"docker-context/tag": "ci"}) for i in range(3)]
    drp.junk_listing = junk

    async def scenario() -> None:
        await bridge_for(drp, sink).resync()

    with quiet():
        asyncio.run(scenario())
    present = sink.present()
    for m in good:
        assert present[m["Uuid"]] == RUNNER


frame_like = st.fixed_dictionaries(
    {},
    optional={
        "Type": st.sampled_from(["machines", "contexts", "clusters", "resource_brokers",
                                 "profiles", "websocket"]) | json_values,
        "Action": st.sampled_from(["create", "save", "update", "delete", "boom"]) | json_values,
        "Key": st.text(max_size=8) | json_values,
        "Object": machine_like | json_values,
        "Original": machine_like | json_values,
    },
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(json_values | frame_like, max_size=8), raw=st.lists(st.text(max_size=20)))
def test_any_frame_is_taken_counted_and_the_rest_converges(
    frames: list[Any], raw: list[str]
) -> None:
    """Whatever DRP sends (JSON of any shape, or not JSON), intake never raises, counts every
    frame, and a well-formed machine event among the junk is written."""
    drp, sink = FakeDrp(), MemSink()
    good = {"Uuid": "good-machine-1", "Name": "g", "Context": "runner",
            "Params": {"docker-context/tag": "ci"}}  # fmt: skip
    texts = [json.dumps(f) for f in frames] + raw + [event("machines", "create", "good-machine-1",
                                                           good)]  # fmt: skip

    async def scenario() -> Bridge:
        bridge = bridge_for(drp, sink)
        bridge.contexts = await drp.contexts()
        for text in texts:
            bridge.handle_text(text)
        await bridge.flush()
        await bridge.idle()
        return bridge

    with quiet():
        bridge = asyncio.run(scenario())
    assert bridge.stats["events"] == len(texts)
    counted = sum(bridge.stats[k] for k in ("malformed", "unrelated", "irrelevant"))
    assert counted <= len(texts)
    runner = bridge.contexts.get("runner")
    if runner == Context(name="runner", engine="docker-context", image="img/runner:1"):
        assert sink.present()["good-machine-1"] == RUNNER
    # (else junk renamed the "runner" context itself: a well-formed context event)

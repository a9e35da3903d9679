"""Random DRP event sequences (duplicated, reordered, dropped, malformed) against the bridge:
the desired state it writes ends up equal to what DRP holds. A fake DRP and an in-memory sink
keep this fast; the real client and simulator are covered by the integration tests."""

from __future__ import annotations

import asyncio
import copy
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker_bridge.bridge import Bridge, BridgeConfig
from broker_bridge.models import Context, Machine
from broker_bridge.sink import fingerprint
from broker_bridge.translate import wanted
from tests.bridge_fakes import MemSink, quiet


@pytest.fixture(autouse=True, scope="module")
def _quiet() -> Iterator[None]:
    with quiet():  # junk events warn by design
        yield


UUIDS = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(5)]
CONTEXT_NAMES = ["runner", "auditor", "foreign"]
TAGS = [None, "ci", "audit"]


class FakeDrp:
    """The DRP side the bridge reads: contexts, paged machines, machine tokens."""

    def __init__(self) -> None:
        self.machines: dict[str, dict[str, Any]] = {}
        self.contexts: dict[str, dict[str, Any]] = {
            "runner": {"Name": "runner", "Engine": "docker-context", "Image": "img/runner:1"},
            "auditor": {"Name": "auditor", "Engine": "docker-context", "Image": "img/audit:1"},
            "foreign": {"Name": "foreign", "Engine": "other", "Image": "img/x:1"},
        }

    async def contexts_(self) -> dict[str, Context]:
        return {n: Context.model_validate(c) for n, c in self.contexts.items()}

    async def list_pages(
        self, kind: str, query: str = "", page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        if kind != "machines":
            return
        items = [copy.deepcopy(m) for m in self.machines.values()]
        for start in range(0, len(items), 2):  # tiny pages: paging is exercised
            yield items[start : start + 2]

    async def machine_token(self, uuid: str, ttl_s: int) -> str:
        return f"tok-{uuid}"

    def expected(self) -> dict[str, str]:
        contexts = {n: Context.model_validate(c) for n, c in self.contexts.items()}
        out = {}
        for raw in self.machines.values():
            w = wanted(Machine.model_validate(raw), contexts)
            if w is not None:
                out[w.uuid] = fingerprint(w.context, w.image, w.tag)
        return out


FakeDrp.contexts_.__name__ = "contexts"


class ClientAdapter:
    def __init__(self, drp: FakeDrp) -> None:
        self.drp = drp

    async def contexts(self) -> dict[str, Context]:
        return await self.drp.contexts_()

    def list_pages(
        self, kind: str, query: str = "", page_size: int = 500
    ) -> AsyncIterator[list[dict[str, Any]]]:
        return self.drp.list_pages(kind, query, page_size)

    async def machine_token(self, uuid: str, ttl_s: int) -> str:
        return await self.drp.machine_token(uuid, ttl_s)


def event(kind: str, action: str, key: str, obj: Any, original: Any = None) -> str:
    return json.dumps(
        {
            "Time": "t",
            "Type": kind,
            "Action": action,
            "Key": key,
            "Object": obj,
            "Original": original,
        }
    )


op_strategy = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(UUIDS),
        st.sampled_from(["", *CONTEXT_NAMES]),
        st.sampled_from(TAGS),
    ),
    st.tuples(st.just("delete"), st.sampled_from(UUIDS), st.none(), st.none()),
    st.tuples(
        st.just("engine"),
        st.sampled_from(CONTEXT_NAMES),
        st.sampled_from(["docker-context", "other"]),
        st.none(),
    ),
    st.tuples(st.just("noise"), st.sampled_from(UUIDS), st.none(), st.none()),
)

UNRELATED = '{"Type": "profiles", "Action": "save", "Key": "p", "Object": {}}'
JUNK = [
    "not json",
    "[1, 2]",
    '{"Type": "machines"}',
    '{"Type": "machines", "Action": "explode", "Key": "x", "Object": {}}',
    '{"Type": "machines", "Action": "update", "Key": "x", "Object": {"Uuid": 5}}',
    '{"Type": "machines", "Action": "save", "Key": "x", "Object": "oops"}',
    UNRELATED,
    '{"Type": "contexts", "Action": "save", "Key": "c", "Object": {"Name": ""}}',
    '{"Type": "machines", "Action": "save", "Key": "y", "Object": {"Uuid": "y", "Params": []}}',
]


def apply_op(drp: FakeDrp, op: tuple[Any, ...]) -> list[str]:
    """Change the fake DRP and return the events DRP would emit."""
    kind, a, b, c = op
    if kind == "put":
        before = copy.deepcopy(drp.machines.get(a))
        params = {} if c is None else {"docker-context/tag": c}
        after = {"Uuid": a, "Name": a[-4:], "Context": b, "Params": params, "Meta": {}}
        drp.machines[a] = after
        action = "update" if before else "create"
        return [event("machines", action, a, copy.deepcopy(after), before)]
    if kind == "delete":
        before = drp.machines.pop(a, None)
        return [event("machines", "delete", a, before)] if before else []
    if kind == "engine":
        ctx = drp.contexts[a]
        ctx["Engine"] = b
        return [event("contexts", "update", a, copy.deepcopy(ctx))]
    # noise: an irrelevant param changes (dropped early by the bridge)
    if a not in drp.machines:
        return []
    before = copy.deepcopy(drp.machines[a])
    drp.machines[a]["Params"]["inventory/seen"] = random.random()
    return [event("machines", "save", a, copy.deepcopy(drp.machines[a]), before)]


async def run_scenario(
    ops: list[tuple[Any, ...]],
    rng: random.Random,
    duplicate: float,
    junk: float,
    reorder: bool,
    drop: float,
) -> tuple[FakeDrp, MemSink, Bridge, Counter[str]]:
    """Play ``ops`` to a bridge as events; the last value counts what the stream held."""
    drp, sink = FakeDrp(), MemSink()
    bridge = Bridge(ClientAdapter(drp), sink, BridgeConfig(coalesce_s=0.0))  # type: ignore[arg-type]
    bridge.contexts = await drp.contexts_()
    stream: list[str] = []
    sent: Counter[str] = Counter()
    for op in ops:
        for text in apply_op(drp, op):
            if rng.random() < drop:
                continue
            copies = 2 if rng.random() < duplicate else 1
            stream += [text] * copies
            sent["noise" if op[0] == "noise" else "events"] += copies
        if rng.random() < junk:
            bad = rng.choice(JUNK)
            stream.append(bad)
            sent["unrelated" if bad == UNRELATED else "malformed"] += 1
    if reorder:
        for i in range(len(stream) - 1):  # local swaps: how events overtake each other
            if rng.random() < 0.3:
                stream[i], stream[i + 1] = stream[i + 1], stream[i]
    for text in stream:
        bridge.handle_text(text)
        if rng.random() < 0.5:  # writes complete between events, sometimes
            await bridge.flush()
            await bridge.idle()
    await bridge.flush()
    await bridge.idle()
    return drp, sink, bridge, sent


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, max_size=40), seed=st.integers(0, 2**32))
def test_in_order_events_alone_reach_drp_state(ops: list[tuple[Any, ...]], seed: int) -> None:
    """Duplicates and malformed events in between: no resync needed, no crash; every frame
    is counted, each junk one as what it is."""
    rng = random.Random(seed)
    drp, sink, bridge, sent = asyncio.run(run_scenario(ops, rng, 0.3, 0.3, False, 0.0))
    assert sink.present() == drp.expected()
    assert bridge.stats["events"] == sent.total()
    assert bridge.stats["malformed"] == sent["malformed"]
    assert bridge.stats["unrelated"] == sent["unrelated"]
    assert bridge.stats["irrelevant"] >= sent["noise"]  # (and unchanged re-saves)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_strategy, max_size=40), seed=st.integers(0, 2**32))
def test_reordered_and_dropped_events_are_fixed_by_resync(
    ops: list[tuple[Any, ...]], seed: int
) -> None:
    rng = random.Random(seed)

    async def scenario() -> tuple[FakeDrp, MemSink]:
        drp, sink, bridge, _ = await run_scenario(ops, rng, 0.3, 0.3, True, 0.3)
        await bridge.resync()
        return drp, sink

    drp, sink = asyncio.run(scenario())
    assert sink.present() == drp.expected()


def test_irrelevant_updates_are_dropped_early_and_bursts_coalesce() -> None:
    async def scenario() -> tuple[MemSink, Bridge]:
        drp, sink = FakeDrp(), MemSink()
        bridge = Bridge(ClientAdapter(drp), sink, BridgeConfig(coalesce_s=60))  # type: ignore[arg-type]
        bridge.contexts = await drp.contexts_()
        uuid = UUIDS[0]
        for text in apply_op(drp, ("put", uuid, "runner", "ci")):
            bridge.handle_text(text)
        for _ in range(100):
            for text in apply_op(drp, ("noise", uuid, None, None)):
                bridge.handle_text(text)
        for tag in ("audit", "ci", "audit"):
            for text in apply_op(drp, ("put", uuid, "runner", tag)):
                bridge.handle_text(text)
        assert await bridge.flush() == 0  # window still open
        for key, item in bridge.pending.drain():
            await bridge.converge(key, item)
        return sink, bridge

    sink, bridge = asyncio.run(scenario())
    assert bridge.stats["irrelevant"] == 100
    assert sink.writes == 1  # one write for the burst, with the latest tag
    assert sink.present() == {UUIDS[0]: "runner|img/runner:1|audit"}


def test_bad_input_is_counted_in_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from broker_bridge.metrics import BridgeCollector

    drp, sink = FakeDrp(), MemSink()
    bridge = Bridge(ClientAdapter(drp), sink, BridgeConfig(coalesce_s=60))  # type: ignore[arg-type]
    for text in JUNK:
        bridge.handle_text(text)
    registry = CollectorRegistry()
    registry.register(BridgeCollector(bridge))
    exposed = generate_latest(registry).decode()
    assert f"ctxpool_bridge_events_total {float(len(JUNK))}" in exposed
    assert "ctxpool_bridge_malformed_total 8.0" in exposed  # all but the profiles event
    assert "ctxpool_bridge_unrelated_total 1.0" in exposed

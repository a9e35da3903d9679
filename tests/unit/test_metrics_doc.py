"""The README's metrics table lists exactly what the exporter, the bridge and a node expose:
every name, with its type and labels."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from broker_bridge.metrics import BridgeCollector
from pool.contexts.outcomes import Outcome
from pool.contexts.store import StateStore
from pool.health import Health, HealthCollector
from pool.instruments import Instruments
from pool.limits.limiter import MemoryLimiter
from pool.limits.spec import Limits
from pool.metrics import PoolCollector
from pool.node.enginestate import EngineCollector, EngineState
from pool.node.metrics import ContextStateCollector
from tests.support import REPO

ROW = re.compile(
    r"^\| (?P<where>[a-z, ]+) \| `(?P<name>ctxpool_\w+)` \| (?P<type>\w+) \|(?P<labels>[^|]*)\|"
)


def documented() -> dict[str, dict[str, tuple[str, frozenset[str]]]]:
    """endpoint -> metric name -> (type, labels), from the README's table."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Metrics and health") :]
    out: dict[str, dict[str, tuple[str, frozenset[str]]]] = {}
    for line in section.splitlines():
        m = ROW.match(line)
        if not m:
            continue
        labels = frozenset(re.findall(r"`(\w+)`", m["labels"]))
        for where in m["where"].split(","):
            out.setdefault(where.strip(), {})[m["name"]] = (m["type"], labels)
    return out


def exposed(*collectors: Collector) -> dict[str, tuple[str, frozenset[str]]]:
    """metric name (counters with ``_total``) -> (type, labels) of what ``collectors`` yield."""
    registry = CollectorRegistry()
    for c in collectors:
        registry.register(c)
    out = {}
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        out[name] = (family.type, frozenset(labels))
    return out


@pytest.fixture
def store() -> StateStore:
    store = StateStore(fakeredis.FakeRedis(decode_responses=True), "t:")
    store.redis.sadd(store.keys.owned("n1"), "a")
    # an audit batch's record as the Lua scripts leave it (fakeredis has no Lua here)
    store.redis.hset(
        store.keys.audit("b1"),
        mapping={"check": "noop", "total": 2, "pending": 1, "pass": 1, "done": 1,
                 "created_at": 1.0, "params": "{}"},
    )  # fmt: skip
    store.redis.zadd(store.keys.audits, {"b1": 1.0})
    return store


def test_the_exporter_is_documented(store: StateStore) -> None:
    from tests.unit.test_admin import record

    store.members.heartbeat(record("n1", ["ci"]), ttl_s=30)
    store.admin.drain("n1")
    limiter: Any = MemoryLimiter()
    limits = Limits.model_validate("http=5/s per {host}")
    spec = limits.get("http")
    limiter.acquire("http", "h1", spec, "holder")
    exporter = exposed(PoolCollector(limits, limiter, store, lambda q: 2, lambda q: 5.0))
    assert exporter == documented()["exporter"]


def test_the_bridge_is_documented() -> None:
    health = Health("bridge")
    health.register("resync", 600)
    bridge: Any = SimpleNamespace(stats={}, pending=[], cluster_pending=[], machines={})
    assert exposed(BridgeCollector(bridge), HealthCollector(health)) == documented()["bridge"]


def test_a_node_is_documented(store: StateStore) -> None:
    health = Health("node")
    health.register("heartbeat", 10)
    metrics = Instruments()
    metrics.declare_outcomes(o.value for o in Outcome)
    metrics.gate_holds("http", 0)
    metrics.gate_admitted("http", 0.1)
    metrics.lease_stolen()
    metrics.audit_item("noop", "pass", 0.01)
    node = exposed(
        HealthCollector(health),
        EngineCollector("n1", EngineState()),
        metrics.registry,
        ContextStateCollector("n1", store),
    )
    assert node == documented()["node"]

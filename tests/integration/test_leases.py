"""Fault 4 of issue 8: a context's lease outlives long work, and a full node's backlog pause
does not hold it. A real Redis; two worker threads of one node process share a reconciler
(as a ``--pool threads`` node does); the engine is a stand-in whose create is slow."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from pool.contexts.engine import EnsureAction, EnsureResult
from pool.contexts.models import ContextSpec, Desired, Nudge
from pool.contexts.outcomes import NodeIdentity, Outcome
from pool.contexts.reconcile import Reconciler
from pool.contexts.store import StateStore
from pool.settings import Settings

pytestmark = pytest.mark.integration


class SlowEngine:
    """Creates take ``delay_s`` (an image pull, a slow engine); counts concurrent ones."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.running = 0
        self.most = 0
        self.calls = 0
        self._lock = threading.Lock()

    def ensure(self, spec: ContextSpec, generation: int, owner: str, fresh: bool = False) -> Any:
        with self._lock:
            self.running += 1
            self.calls += 1
            self.most = max(self.most, self.running)
        time.sleep(self.delay_s)
        with self._lock:
            self.running -= 1
        return EnsureResult(EnsureAction.CREATED, "cid")

    def list_containers(self, owner: str | None = None, uuid: str | None = None) -> list[Any]:
        return []

    def remove(self, uuid: str, owner: str) -> int:
        return 0


def _reconciler(
    store: StateStore, engine: Any, published: list[tuple[Nudge, str]], **settings: Any
) -> Reconciler:
    node = NodeIdentity(name="node-a", tags=frozenset({"ci"}), capacity=settings.pop("cap", 5))
    return Reconciler(
        store, engine, Settings(**settings), node, lambda n, q: published.append((n, q))
    )


def _spec(uuid: str) -> ContextSpec:
    return ContextSpec(uuid=uuid, context="c", image="img:1", tag="ci")


def test_a_lease_outlives_work_longer_than_its_ttl(redis_conn: redis.Redis) -> None:
    store = StateStore(redis_conn, "lease:")
    engine = SlowEngine(delay_s=2.0)
    rec = _reconciler(store, engine, [], lock_ttl_s=0.6)
    store.put_desired("m1", Desired.PRESENT, _spec("m1"))
    first = threading.Thread(target=rec.reconcile, args=(Nudge(uuid="m1"),))
    first.start()
    time.sleep(1.2)  # two TTLs into the slow create
    second = rec.reconcile(Nudge(uuid="m1"))  # another worker thread of the same node
    first.join()
    assert second is Outcome.BUSY  # left to the holder, whose lease was renewed
    assert engine.most == 1  # never two creates of one context at once
    assert rec.leases.lost == 0


def test_a_full_node_releases_the_lease_before_it_pauses(redis_conn: redis.Redis) -> None:
    store = StateStore(redis_conn, "lease:")
    published: list[tuple[Nudge, str]] = []
    rec = _reconciler(store, SlowEngine(0.0), published, cap=1, capacity_check_s=2.0)
    store.put_desired("m0", Desired.PRESENT, _spec("m0"))
    assert rec.reconcile(Nudge(uuid="m0")) is Outcome.CONVERGED  # the only slot
    store.put_desired("m1", Desired.PRESENT, _spec("m1"))
    backlog = threading.Thread(target=rec.reconcile, args=(Nudge(uuid="m1"),))
    backlog.start()
    deadline = time.monotonic() + 5
    while not published and time.monotonic() < deadline:
        time.sleep(0.01)
    assert published[-1][1] == "tag-ci"  # sent back to its tag queue
    assert backlog.is_alive()  # ... and pausing one capacity-check period
    acquired, _ = store.locks.acquire("m1", "probe", 5.0)
    assert acquired  # without holding the lease meanwhile
    backlog.join()

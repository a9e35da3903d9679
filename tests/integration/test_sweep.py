"""The pool sweep's re-nudge policy, against a real Redis (no Docker needed)."""

from __future__ import annotations

import time

import pytest
import redis

from pool.contexts.models import ContextSpec, Desired, Nudge
from pool.contexts.outcomes import NodeIdentity
from pool.contexts.reconcile import Reconciler
from pool.contexts.store import StateStore
from pool.contexts.sweep import Sweeper
from pool.membership import Membership
from pool.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def st(redis_conn: redis.Redis) -> StateStore:
    return StateStore(redis_conn, "sweep:")


def _sweeper(st: StateStore, sent: list[tuple[str, str]], depth: int | None) -> Sweeper:
    settings = Settings(node_name="n1", sweep_s=10)
    node = NodeIdentity(name="n1", tags=frozenset({"ci"}), capacity=5)

    def publish(nudge: Nudge, queue: str) -> None:
        sent.append((nudge.uuid, queue))

    reconciler = Reconciler(st, None, settings, node, publish)  # type: ignore[arg-type]
    return Sweeper(reconciler, publish, lambda _queue: depth)


def _age(st: StateStore, uuid: str, seconds: float) -> None:
    st.redis.hset(st.keys.ctx(uuid), "updated_at", repr(time.time() - seconds))


def test_pool_sweep_renudges_unowned_and_dead_owned(st: StateStore) -> None:
    for uuid, tag in (("a", "ci"), ("b", "ci"), ("c", "audit"), ("fresh", "ci")):
        st.put_desired(
            uuid, Desired.PRESENT, ContextSpec(uuid=uuid, context="c", image="i", tag=tag)
        )
    for uuid in ("a", "b", "c"):
        _age(st, uuid, 60)
    st.ownership.claim("b", "dead-node", None)
    st.ownership.claim("c", "live-node", None)
    st.members.heartbeat(Membership(node="live-node", worker_id="w", incarnation="i"), 30)
    sent: list[tuple[str, str]] = []
    assert _sweeper(st, sent, depth=None).sweep_pool() == 2
    assert sorted(sent) == [("a", "tag-ci"), ("b", "tag-ci")]


def test_pool_sweep_leaves_a_queued_backlog_alone(st: StateStore) -> None:
    for uuid in ("a", "b"):
        st.put_desired(
            uuid, Desired.PRESENT, ContextSpec(uuid=uuid, context="c", image="i", tag="ci")
        )
        _age(st, uuid, 60)
    sent: list[tuple[str, str]] = []
    assert _sweeper(st, sent, depth=2).sweep_pool() == 0  # both nudges still queued
    assert _sweeper(st, sent, depth=1).sweep_pool() == 2  # one lost: nudge both again
    assert len(sent) == 2


def test_pool_sweep_skips_absent_unowned_and_forgets_expired(st: StateStore) -> None:
    st.put_desired("gone", Desired.PRESENT, ContextSpec(uuid="gone", context="c", image="i"))
    st.put_desired("gone", Desired.ABSENT)
    _age(st, "gone", 60)
    st.redis.zadd(st.keys.contexts, {"expired": 1.0})
    sent: list[tuple[str, str]] = []
    assert _sweeper(st, sent, depth=None).sweep_pool() == 0
    assert st.redis.zscore(st.keys.contexts, "expired") is None

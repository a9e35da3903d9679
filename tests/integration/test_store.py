"""State-store semantics (Lua scripts) against a real Redis."""

from __future__ import annotations

import time

import pytest
import redis

from pool.contexts.locks import LockHolder
from pool.contexts.models import ContextSpec, Desired
from pool.contexts.store import StateStore
from pool.errors import StoreError
from pool.membership import Membership

pytestmark = [pytest.mark.integration, pytest.mark.no_broker]


@pytest.fixture
def st(redis_conn: redis.Redis) -> StateStore:
    return StateStore(redis_conn, "unit:")


def spec(uuid: str = "m1", version: str = "1", tag: str = "ci", token: str = "t") -> ContextSpec:
    return ContextSpec(
        uuid=uuid, context="c", image="img:1", tag=tag, token=token, env={"V": version}
    )


def test_generation_bumps_only_on_change(st: StateStore) -> None:
    assert st.put_desired("m1", Desired.PRESENT, spec()) == (1, True)
    assert st.put_desired("m1", Desired.PRESENT, spec()) == (1, False)
    assert st.put_desired("m1", Desired.PRESENT, spec(version="2")) == (2, True)
    assert st.put_desired("m1", Desired.ABSENT) == (3, True)
    assert st.put_desired("m1", Desired.ABSENT) == (3, False)
    assert st.put_desired("m1", Desired.PRESENT, spec(version="2")) == (4, True)


def test_token_renewal_updates_spec_without_new_generation(st: StateStore) -> None:
    st.put_desired("m1", Desired.PRESENT, spec(token="old"))
    assert st.put_desired("m1", Desired.PRESENT, spec(token="new")) == (1, False)
    got = st.get_desired("m1")
    assert got is not None
    assert got.spec is not None
    assert got.spec.token.get_secret_value() == "new"


def test_explicit_generations_reject_stale_writes(st: StateStore) -> None:
    assert st.put_desired("m1", Desired.PRESENT, spec(version="5"), generation=5) == (5, True)
    assert st.put_desired("m1", Desired.PRESENT, spec(version="3"), generation=3) == (5, False)
    assert st.put_desired("m1", Desired.ABSENT, generation=5) == (5, False)
    # a newer ordered write with the same spec still moves the generation on
    assert st.put_desired("m1", Desired.PRESENT, spec(version="5"), generation=7) == (7, False)
    assert st.put_desired("m1", Desired.PRESENT, spec(version="6"), generation=6) == (7, False)
    got = st.get_desired("m1")
    assert got is not None
    assert got.spec is not None
    assert got.spec.env == {"V": "5"}


def test_absent_keeps_tag_for_routing(st: StateStore) -> None:
    st.put_desired("m1", Desired.PRESENT, spec(tag="audit"))
    st.put_desired("m1", Desired.ABSENT)
    assert st.status("m1").tag == "audit"


def test_claim_is_compare_and_set_with_capacity(st: StateStore) -> None:
    assert st.ownership.claim("a", "n1", None, capacity=2).ok
    assert st.ownership.claim("a", "n2", None, capacity=2).outcome == "lost"
    assert st.ownership.claim("a", "n2", None, capacity=2).owner == "n1"
    assert st.ownership.claim("b", "n1", None, capacity=2).ok
    assert st.ownership.claim("c", "n1", None, capacity=2).outcome == "full"
    assert st.ownership.count_owned("n1") == 2
    # takeover from n1 moves the owned-set entry
    assert st.ownership.claim("a", "n2", "n1", capacity=2).ok
    assert st.ownership.owned_by("n1") == {"b"}
    assert st.ownership.owned_by("n2") == {"a"}
    # re-claiming what one owns is fine even when full
    assert st.ownership.claim("b", "n1", "n1", capacity=1).ok
    assert st.ownership.disown("a", "n1") is False
    assert st.ownership.disown("a", "n2") is True
    assert st.ownership.owner("a") is None


def test_lock_dirty_protocol(st: StateStore) -> None:
    assert st.locks.acquire("m1", "A", 10) == (True, "A")
    assert st.locks.acquire("m1", "B", 10) == (False, "A")  # marks dirty
    assert st.locks.release("m1", "A") == 2  # holder must run again
    assert st.locks.acquire("m1", "A", 10) == (True, "A")
    assert st.locks.release("m1", "A") == 1
    assert st.locks.release("m1", "A") == 0


def test_lock_lease_expires(st: StateStore) -> None:
    assert st.locks.acquire("m1", "A", 0.2)[0]
    time.sleep(0.3)
    assert st.locks.acquire("m1", "B", 10)[0]


def test_lock_steal_is_cas(st: StateStore) -> None:
    st.locks.acquire("m1", "A", 10)
    assert not st.locks.steal("m1", "X", "B", 10)
    assert st.locks.steal("m1", "A", "B", 10)
    assert st.locks.release("m1", "B") == 1


def test_finalize_absent_requires_current_generation(st: StateStore) -> None:
    st.put_desired("m1", Desired.PRESENT, spec())
    st.ownership.claim("m1", "n1", None)
    gen, _ = st.put_desired("m1", Desired.ABSENT)
    assert not st.finalize_absent("m1", "n1", gen - 1, 60)
    assert st.finalize_absent("m1", "n1", gen, 60)
    assert st.ownership.owner("m1") is None
    assert st.ownership.count_owned("n1") == 0
    assert 0 < st.redis.ttl(st.keys.ctx("m1")) <= 60
    # re-applying revives the record and drops the tombstone TTL
    st.put_desired("m1", Desired.PRESENT, spec())
    assert st.redis.ttl(st.keys.ctx("m1")) == -1


def test_membership_ttl_and_listing(st: StateStore) -> None:
    st.members.heartbeat(Membership(node="n1", worker_id="n1@h", incarnation="i"), ttl_s=0.3)
    assert st.members.is_alive("n1")
    assert [v.name for v in st.members.nodes() if v.alive] == ["n1"]
    time.sleep(0.4)
    assert not st.members.is_alive("n1")
    views = st.members.nodes()
    assert [(v.name, v.alive) for v in views] == [("n1", False)]


def test_lock_holder_parse() -> None:
    holder = LockHolder.parse("node-a|abc|123|ff")
    assert (holder.node, holder.incarnation, holder.pid) == ("node-a", "abc", 123)
    assert LockHolder.parse("garbage").pid is None


def test_unreachable_redis_is_a_store_error() -> None:
    st = StateStore.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(StoreError, match="state store"):
        st.get_desired("m1")


def test_preferred_node_is_a_hint_beside_the_spec(st: StateStore) -> None:
    gen, _ = st.put_desired("u1", Desired.PRESENT, spec(uuid="u1"), preferred="node-b")
    desired = st.get_desired("u1")
    assert desired is not None
    assert desired.preferred == "node-b"
    again, changed = st.put_desired("u1", Desired.PRESENT, spec(uuid="u1"), preferred=None)
    assert (again, changed) == (gen, False)  # a hint changes no generation
    desired = st.get_desired("u1")
    assert desired is not None
    assert desired.preferred is None


def test_resync_marker_needs_the_epoch_it_began_in(st: StateStore) -> None:
    assert st.last_resync() is None
    epoch, fresh = st.begin_resync()
    assert fresh
    assert st.begin_resync() == (epoch, False)
    assert st.resync_completed(epoch)
    assert st.last_resync() is not None
    old = epoch
    st.redis.flushdb()  # Redis lost its data while a resync ran
    late_epoch, fresh = st.begin_resync()
    assert fresh
    assert late_epoch != old
    assert not st.resync_completed(old)  # the old resync proves nothing now
    assert st.last_resync() is None


def test_a_tag_only_change_updates_the_routing_tag(st: StateStore) -> None:
    gen, _ = st.put_desired("m1", Desired.PRESENT, spec(tag="ci"))
    assert st.put_desired("m1", Desired.PRESENT, spec(tag="audit")) == (gen, False)
    assert st.status("m1").tag == "audit"  # sweeps and removals route by it

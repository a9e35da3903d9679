"""The bridge's sink on a real Redis: it writes desired state and names a preferred node, but
never claims (only nodes do); batched compares answer with what differs only; contexts of
stalled nodes go back to their tag queue."""

from __future__ import annotations

import time

import pytest
import redis

from broker_bridge.sink import PoolSink, Target
from pool.contexts.api import ContextAPI
from pool.contexts.models import ContextSpec, Desired, Nudge
from pool.contexts.store import StateStore
from pool.membership import Membership, NodeStats

pytestmark = pytest.mark.integration


def spec(uuid: str, tag: str = "ci", image: str = "img:1", env: str = "1") -> ContextSpec:
    return ContextSpec(uuid=uuid, context="runner", image=image, tag=tag, token="t",
                       env={"V": env})  # fmt: skip


def node(name: str, tags: list[str], running: int = 0, capacity: int = 10) -> Membership:
    return Membership(
        node=name,
        worker_id=f"{name}@host",
        incarnation="i1",
        tags=tags,
        stats=NodeStats(running_contexts=running, capacity=capacity),
    )


@pytest.fixture
def parts(redis_conn: redis.Redis) -> tuple[StateStore, PoolSink, list[tuple[str, str]]]:
    store = StateStore(redis_conn, "sinktest:")
    sent: list[tuple[str, str]] = []

    def publish(nudge: Nudge, queue: str) -> None:
        sent.append((nudge.uuid, queue))

    return store, PoolSink(store, ContextAPI(store, publish)), sent


def test_the_bridge_names_a_preferred_node_and_never_claims(
    parts: tuple[StateStore, PoolSink, list[tuple[str, str]]],
) -> None:
    store, sink, sent = parts
    store.members.heartbeat(node("n1", ["ci"]), ttl_s=30)
    store.members.heartbeat(node("full", ["ci"], running=3, capacity=3), ttl_s=30)
    store.members.heartbeat(node("owner", ["ci"]), ttl_s=30)
    assert store.ownership.claim("u-owned", "owner", None, 10).ok  # placed by a node before
    sink.write(
        [
            (spec("u-free"), "n1"),  # DRP names a live node of the tag with room
            (spec("u-full"), "full"),  # ... a full one: the tag decides
            (spec("u-gone"), "gone"),  # ... one that is not alive
            (spec("u-none"), None),
            (spec("u-owned"), "n1"),  # owned already: its owner keeps it
        ],
        [],
    )
    assert dict(sent) == {
        "u-free": "node-n1",
        "u-full": "tag-ci",
        "u-gone": "tag-ci",
        "u-none": "tag-ci",
        "u-owned": "node-owner",
    }
    for uuid in ("u-free", "u-full", "u-gone", "u-none"):
        assert store.ownership.owner(uuid) is None  # nobody claimed: the node that takes it will
    assert store.ownership.owner("u-owned") == "owner"
    desired = store.get_desired("u-free")
    assert desired is not None
    assert desired.preferred == "n1"  # the hint, kept beside the spec


def test_compare_answers_only_with_what_differs(
    parts: tuple[StateStore, PoolSink, list[tuple[str, str]]],
) -> None:
    _, sink, _ = parts
    sink.write([(spec(f"u{i}"), None) for i in range(1200)], ["u-gone"])  # > one batch
    same: Target = ("runner", "img:1", "ci")
    expected: list[tuple[str, Target | None]] = [(f"u{i}", same) for i in range(1200)]
    assert sink.compare(expected) == {}
    assert sink.compare([("u-gone", None), ("u-never", None)]) == {}

    sink.write([(spec("u7", tag="audit"), None)], [])  # a tag-only change keeps the generation
    assert sink.compare([("u7", ("runner", "img:1", "audit"))]) == {}
    differing = sink.compare(
        [
            ("u5", ("runner", "img:2", "ci")),  # another image
            ("u6", None),  # no longer wanted
            ("u7", same),  # the old tag
            ("u-new", same),  # unknown to the store
            ("u-gone", same),  # absent in the store
        ]
    )
    assert set(differing) == {"u5", "u6", "u7", "u-new", "u-gone"}
    assert differing["u-new"] is None
    u5 = differing["u5"]
    assert u5 is not None
    assert u5.present
    assert u5.fingerprint == "runner|img:1|ci"
    gone = differing["u-gone"]
    assert gone is not None
    assert not gone.present
    assert sink.present_except({"u1", "u2"}) == {f"u{i}" for i in range(1200)} - {"u1", "u2"}


def test_contexts_of_a_stalled_node_go_back_to_their_tag(
    parts: tuple[StateStore, PoolSink, list[tuple[str, str]]],
) -> None:
    store, sink, sent = parts
    sink.write([(spec("u1", tag="audit"), None), (spec("u2"), None), (spec("u3"), None)], ["u3"])
    store.members.heartbeat(node("dying", ["ci", "audit"]), ttl_s=0.2)
    store.members.heartbeat(node("alive", ["ci"]), ttl_s=30)
    for uuid, owner in (("u1", "dying"), ("u2", "alive"), ("u3", "dying")):
        assert store.ownership.claim(uuid, owner, None, 10).ok
    sent.clear()
    time.sleep(0.4)  # the heartbeat of "dying" expires
    assert sink.renudge_stalled() == 1  # u1 (u2's owner is alive, u3 is no longer wanted)
    assert sent == [("u1", "tag-audit")]
    assert store.ownership.owner("u1") == "dying"  # the node of the tag that takes it claims it
    u3 = store.get_desired("u3")
    assert u3 is not None
    assert u3.desired is Desired.ABSENT

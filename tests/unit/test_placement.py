"""Placement decisions (pure): where a nudge goes, when a node leaves a context to another."""

from __future__ import annotations

from pool.contexts import placement
from pool.membership import Membership, NodeStats


def record(tags: list[str], running: int, capacity: int) -> Membership:
    return Membership(
        node="n",
        worker_id="n@h",
        incarnation="i",
        tags=tags,
        stats=NodeStats(running_contexts=running, capacity=capacity),
    )


def test_can_host_needs_the_tag_and_room() -> None:
    assert placement.can_host(record(["ci"], 1, 2), "ci")
    assert not placement.can_host(record(["ci"], 2, 2), "ci")
    assert not placement.can_host(record(["audit"], 0, 2), "ci")
    assert not placement.can_host(None, "ci")


def test_nudge_queue_prefers_the_live_owner_then_the_open_preferred_node() -> None:
    assert placement.nudge_queue("ci", "a", True, "b") == "node-a"
    assert placement.nudge_queue("ci", "a", False, "b") == "tag-ci"  # stalled owner: takeover
    assert placement.nudge_queue("ci", None, False, "b") == "node-b"
    assert placement.nudge_queue("ci", None, False, None) == "tag-ci"


def test_only_a_first_hop_is_left_to_the_preferred_node() -> None:
    assert placement.leave_to_preferred("b", "a", 0) == "b"
    assert placement.leave_to_preferred("b", "a", 1) is None  # forwarded/backlogged: claim
    assert placement.leave_to_preferred("a", "a", 0) is None
    assert placement.leave_to_preferred(None, "a", 0) is None


def test_spread_fills_the_least_loaded_node_within_capacity() -> None:
    assert placement.spread({"a": (0, 10), "b": (0, 10)}, 4) == ["a", "b", "a", "b"]
    assert placement.spread({"a": (5, 10), "b": (0, 2)}, 4) == ["b", "a", "b", "a"]
    assert placement.spread({"a": (1, 1)}, 2) == [None, None]  # all full: the tag queue decides
    assert placement.spread({}, 1) == [None]


def test_a_preferred_node_without_a_record_is_waited_for_one_membership_ttl() -> None:
    assert placement.may_still_register(age_s=1.0, membership_ttl_s=30.0)
    assert not placement.may_still_register(age_s=31.0, membership_ttl_s=30.0)


def test_drained_or_quarantined_nodes_are_not_offered_new_contexts() -> None:
    from pool.admin import AdminState, AdminStatus
    from pool.contexts.placement import offerable
    from pool.membership import Membership

    record = Membership(node="n1", worker_id="w", incarnation="i", tags=["ci"])
    assert offerable(record, "ci")
    assert not offerable(record, "audit")
    assert not offerable(None, "ci")
    for state in (AdminState.DRAINING, AdminState.DRAINED, AdminState.QUARANTINED):
        held = record.model_copy(update={"admin": AdminStatus(state=state)})
        assert not offerable(held, "ci")

"""Drain and quarantine: the state model, its store, placement and the CLI (pure parts)."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from pool import cli
from pool.admin import (
    AdminMode,
    AdminState,
    AdminStatus,
    NodeAdmin,
    NodeAdmins,
    describe,
    effective_status,
    format_duration,
    parse_duration_s,
)
from pool.contexts import placement
from pool.contexts.store import StateStore
from pool.keys import Keys
from pool.membership import Members, Membership, NodeStats, NodeView

DRAIN = NodeAdmin(mode=AdminMode.DRAINING, why="kernel", since=100.0)
QUARANTINE = NodeAdmin(mode=AdminMode.QUARANTINED, why="flaky disk", since=100.0, until=7300.0)


def record(name: str, tags: list[str], admin: AdminStatus | None = None) -> Membership:
    return Membership(
        node=name,
        worker_id=f"{name}@h",
        incarnation="i",
        tags=tags,
        stats=NodeStats(running_contexts=1, capacity=5),
        admin=admin or AdminStatus(),
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1d", 86400.0),
     ("1.5H", 5400.0), (" 2h ", 7200.0)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "2w", "h", "-1h", "0", "1h30m", "soon"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration_s(text)


def test_format_duration() -> None:
    assert format_duration(5400) == "1h30m"
    assert format_duration(42) == "42s"
    assert format_duration(90061) == "1d1h"  # the two largest parts
    assert format_duration(-5) == "0s"


def test_the_order_decides_the_mode_the_record_the_progress() -> None:
    assert effective_status(None, None).state is AdminState.ACTIVE
    # lifted: a stale record that still says draining does not count
    assert effective_status(None, AdminStatus(state=AdminState.DRAINING)).state is (
        AdminState.ACTIVE
    )
    # ordered, not yet seen by the node
    fresh = effective_status(DRAIN, AdminStatus())
    assert (fresh.state, fresh.why, fresh.detail) == (
        AdminState.DRAINING,
        "kernel",
        "not yet seen by the node",
    )
    progress = AdminStatus(state=AdminState.DRAINING, detail="waiting: x", remaining=3)
    assert effective_status(DRAIN, progress).remaining == 3
    assert effective_status(DRAIN, AdminStatus(state=AdminState.DRAINED)).state is (
        AdminState.DRAINED
    )
    # a quarantine ordered over a drain: quarantined, whatever the record says
    q = effective_status(QUARANTINE, AdminStatus(state=AdminState.DRAINED))
    assert (q.state, q.why, q.until) == (AdminState.QUARANTINED, "flaky disk", 7300.0)
    assert not q.takes_new_work
    assert AdminStatus().takes_new_work


def test_describe() -> None:
    assert describe(AdminStatus(), 0.0) == "active"
    draining = AdminStatus(
        state=AdminState.DRAINING, why="rack", detail="waiting: no other node of tag ci (2)",
        remaining=2,
    )  # fmt: skip
    assert (
        describe(draining, 0.0) == "draining (2 left: waiting: no other node of tag ci (2); rack)"
    )
    assert describe(AdminStatus(state=AdminState.DRAINED), 0.0) == "drained"
    q = effective_status(QUARANTINE, None)
    assert describe(q, 100.0) == "quarantined (until 1970-01-01 02:01Z, in 2h; flaky disk)"
    forever = AdminStatus(state=AdminState.QUARANTINED, why="x")
    assert describe(forever, 0.0) == "quarantined (until lifted; x)"


def test_orders_in_redis_drain_has_no_ttl_quarantine_expires() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    keys = Keys("t:")
    admins = NodeAdmins(client, keys)
    assert admins.get("n1") is None
    assert admins.drain("n1", "kernel", now=100.0) is None
    assert client.ttl(keys.node_admin("n1")) == -1  # no TTL: survives anything but undrain
    order = admins.get("n1")
    assert order is not None
    assert (order.mode, order.why, order.since, order.until) == (
        AdminMode.DRAINING, "kernel", 100.0, None
    )  # fmt: skip
    assert "@" in order.by
    previous = admins.quarantine("n1", "disk", for_s=7200.0, now=200.0)
    assert previous is not None
    assert previous.mode is AdminMode.DRAINING
    assert 7190 <= client.ttl(keys.node_admin("n1")) <= 7200
    assert admins.get("n1").until == 7400.0  # type: ignore[union-attr]
    assert admins.get_many(["n1", "n2"])["n2"] is None
    lifted = admins.lift("n1")
    assert lifted is not None
    assert lifted.mode is AdminMode.QUARANTINED
    assert admins.get("n1") is None
    assert admins.lift("n1") is None
    # an unreadable order errs on the safe side: take nothing new, keep what runs
    client.set(keys.node_admin("n3"), "{garbage")
    assert admins.get("n3").mode is AdminMode.QUARANTINED  # type: ignore[union-attr]


def test_node_views_merge_order_and_record() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    keys = Keys("t:")
    members = Members(client, keys)
    members.heartbeat(record("n1", ["ci"]), ttl_s=30)
    members.heartbeat(record("n2", ["ci"]), ttl_s=30)
    NodeAdmins(client, keys).drain("n1")
    views = {v.name: v for v in members.nodes()}
    assert views["n1"].admin.state is AdminState.DRAINING  # ordered; its record is older
    assert views["n2"].admin.state is AdminState.ACTIVE


def test_placement_skips_drained_and_quarantined_nodes() -> None:
    active = record("a", ["ci"])
    draining = record("d", ["ci"], AdminStatus(state=AdminState.DRAINING))
    quarantined = record("q", ["ci"], AdminStatus(state=AdminState.QUARANTINED))
    drained = record("x", ["ci"], AdminStatus(state=AdminState.DRAINED))
    assert placement.can_host(active, "ci")
    for r in (draining, quarantined, drained):
        assert not placement.can_host(r, "ci")  # not even as a DRP-preferred node
    assert placement.may_claim(None)
    assert not placement.may_claim(DRAIN)
    assert not placement.may_claim(QUARANTINE)
    assert placement.intake_open(1, 5, None)
    assert not placement.intake_open(5, 5, None)
    assert not placement.intake_open(0, 5, QUARANTINE)
    records = [active, draining, quarantined, record("b", ["audit"]), record("c", ["ci"])]
    assert placement.handoff_targets(records, "ci", "d") == ["a", "c"]
    assert placement.handoff_targets(records, "ci", "a") == ["c"]  # never itself
    assert placement.handoff_targets(records, "gpu", "d") == []


def test_nodes_table_has_a_state_column() -> None:
    views = [
        NodeView(name="n1", alive=True, last_seen=95.0, record=record("n1", ["ci"]),
                 admin=effective_status(QUARANTINE, None)),
        NodeView(name="n2", alive=False, last_seen=90.0, record=None,
                 admin=effective_status(DRAIN, None)),
        NodeView(name="n3", alive=True, last_seen=99.0, record=record("n3", ["ci"])),
    ]  # fmt: skip
    lines = cli.format_nodes(views, now=100.0).splitlines()
    header = lines[0].split()
    assert header[:4] == ["NODE", "UP", "STATE", "TAGS"]
    assert "quarantined (until 1970-01-01 02:01Z, in 2h; flaky disk)" in lines[1]
    assert "stalled" in lines[2]
    assert "draining (0 left: not yet seen by the node; kernel)" in lines[2]
    assert lines[3].split()[2] == "active"


def test_order_change_messages() -> None:
    line = cli.format_order_change("n1", "active", DRAIN, now=160.0, known=True)
    assert line == "node n1: active (was draining since 1m ago)"
    assert "not drained or quarantined" in cli.format_order_change("n1", "active", None, 0, True)
    unknown = cli.format_order_change("n9", "draining", None, 0.0, known=False)
    assert "has not been seen in the last day" in unknown


@pytest.fixture
def fake_store(monkeypatch: pytest.MonkeyPatch) -> StateStore:
    store = StateStore(fakeredis.FakeRedis(decode_responses=True), "t:")
    monkeypatch.setattr(StateStore, "from_url", classmethod(lambda cls, *a, **k: store))
    monkeypatch.setenv("CTXPOOL_KEY_PREFIX", "t:")
    return store


def test_cli_commands_write_and_lift_orders(
    fake_store: StateStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["quarantine", "n1", "--for", "2h", "--why", "disk"]) == 0
    assert "node n1: quarantined for 2h" in capsys.readouterr().out
    order = fake_store.admin.get("n1")
    assert order is not None
    assert order.mode is AdminMode.QUARANTINED
    assert order.why == "disk"
    assert cli.main(["drain", "n1"]) == 0
    assert "was quarantined" in capsys.readouterr().out
    assert cli.main(["unquarantine", "n1"]) == 0  # lifts a drain too: the node is active
    assert "was draining" in capsys.readouterr().out
    assert fake_store.admin.get("n1") is None
    assert cli.main(["quarantine", "n1", "--for", "soon", "--why", "x"]) == 2
    assert "duration" in capsys.readouterr().err
    assert cli.main(["drain", "bad/name"]) == 2
    assert fake_store.admin.get("n1") is None
    with pytest.raises(SystemExit):
        cli.main(["quarantine", "n1"])  # --why is required


def test_metrics_export_admin_state(fake_store: StateStore) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from pool.limits.limiter import MemoryLimiter
    from pool.metrics import PoolCollector
    from pool.settings import Settings

    fake_store.members.heartbeat(
        record("n1", ["ci"], AdminStatus(state=AdminState.DRAINING, remaining=4)), ttl_s=30
    )
    fake_store.admin.drain("n1")
    registry = CollectorRegistry()
    limiter: Any = MemoryLimiter()
    registry.register(PoolCollector(Settings().limits, limiter, fake_store, lambda q: 0))
    text = generate_latest(registry).decode()
    assert 'ctxpool_node_admin_state{node="n1",state="draining"} 1.0' in text
    assert 'ctxpool_node_admin_state{node="n1",state="active"} 0.0' in text
    assert 'ctxpool_node_drain_remaining{node="n1"} 4.0' in text

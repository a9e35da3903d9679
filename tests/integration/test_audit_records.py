"""The audit batch record's Lua transitions against a real Redis: created once, each item
final once, redeliveries no-ops, stale runs taken over, deferrals released, completion
counted, stuck items found."""

from __future__ import annotations

import time

import pytest
import redis

from pool.audits.models import BatchInfo, StoredResult
from pool.audits.records import AuditRecords
from pool.keys import Keys

pytestmark = [pytest.mark.integration, pytest.mark.no_broker]


@pytest.fixture
def records(redis_conn: redis.Redis, run_id: str) -> AuditRecords:
    return AuditRecords(redis_conn, Keys(f"ctxpool-{run_id}:"))


def _info(batch: str, n: int, timeout_s: float = 5.0) -> BatchInfo:
    return BatchInfo(batch=batch, check="noop", total=n, timeout_s=timeout_s)


def _res(result: str = "pass") -> StoredResult:
    return StoredResult(result=result, summary=result)  # type: ignore[arg-type]


def test_created_once(records: AuditRecords) -> None:
    assert records.create(_info("b", 3), ["a", "b", "c"], 60)
    assert not records.create(_info("b", 2), ["x", "y"], 60)
    info = records.info("b")
    assert info is not None
    assert info.total == 3
    assert records.targets("b", [0, 1, 2]) == ["a", "b", "c"]
    assert 0 < records.redis.ttl(records.keys.audit("b")) <= 60


def test_each_item_final_once_and_completion(records: AuditRecords) -> None:
    records.create(_info("b", 2), ["a", "b"], 60)
    assert records.start("b", 0, "t1", 30) == "run"
    assert records.start("b", 0, "t2", 30) == "busy"  # a duplicate while it runs
    assert records.finish("b", 0, _res("fail"), 600) == 1
    assert records.finish("b", 0, _res("pass"), 600) == 0  # written once
    assert records.start("b", 0, "t3", 30) == "final"  # a redelivery is a no-op
    assert records.start("b", 1, "t4", 30) == "run"
    assert records.finish("b", 1, _res("timeout"), 600) == 2  # complete
    info = records.info("b")
    assert info is not None
    assert info.complete
    assert info.counts == {"pending": 0, "running": 0, "pass": 0, "fail": 1, "error": 0,
                           "timeout": 1}  # fmt: skip
    assert info.done == 2
    assert records.redis.ttl(records.keys.audit("b")) > 60  # retention from completion
    report = records.report("b")
    assert report is not None
    assert [(r.target, r.state) for r in report.rows] == [("a", "fail"), ("b", "timeout")]


def test_stale_run_taken_over_and_release(records: AuditRecords) -> None:
    records.create(_info("b", 2), ["a", "b"], 60)
    assert records.start("b", 0, "dead", 30) == "run"
    assert records.start("b", 0, "new", 0) == "run"  # stale_after 0: the first run is dead
    assert not records.release("b", 0, "dead")  # the dead run no longer holds it
    assert records.release("b", 0, "new")
    info = records.info("b")
    assert info is not None
    assert (info.counts["pending"], info.counts["running"]) == (2, 0)
    assert records.start("b", 0, "again", 30) == "run"


def test_gone_batch_is_a_noop(records: AuditRecords) -> None:
    assert records.start("nope", 0, "t", 30) == "gone"
    assert records.finish("nope", 0, _res(), 60) == 0


def test_stuck_items(records: AuditRecords) -> None:
    records.create(_info("b", 3, timeout_s=1.0), ["a", "b", "c"], 60)
    assert records.start("b", 0, "t", 30) == "run"
    info = records.info("b")
    assert info is not None
    now = time.time()
    fresh = records.stuck(info, grace_s=1.0, pending_after_s=60, now=now)
    assert (fresh.running, fresh.pending) == ([], [])
    later = records.stuck(info, grace_s=1.0, pending_after_s=60, now=now + 61)
    assert later.running == [0]
    assert later.pending == [1, 2]

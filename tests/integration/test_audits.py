"""Issue 11's must-shows for the batch machinery, with real Redis and real worker processes.

(1) 500 noop targets over two nodes complete; the report has 500 rows and the failing rows
are exactly the targets set up to fail. (2) A ``kill -9``ed worker mid-batch: 500 results,
none counted twice, repaired by the sweep (asserted: items were sent again). (4) The CLI's
progress bar updates while a batch runs. (5) Two beat processes for one schedule make one
batch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pool.appconfig import CtxpoolCelery
from pool.audits.service import Audits
from pool.queues import audit_queue
from tests import support

pytestmark = pytest.mark.integration

N = 500


def _targets(n: int) -> list[str]:
    """``host-000`` ... with every 7th named ``bad-…`` (set up to fail)."""
    return [f"bad-{i:03d}" if i % 7 == 3 else f"host-{i:03d}" for i in range(n)]


@pytest.fixture
def audits(producer_app: CtxpoolCelery) -> Audits:
    return Audits(producer_app)


@pytest.fixture
def tag(run_id: str) -> str:
    support.purge_queues([audit_queue(run_id)])
    return run_id


def _done(audits: Audits, batch: str) -> int:
    info = audits.info(batch)
    return info.done if info is not None else 0


def _assert_complete(audits: Audits, batch: str, targets: list[str]) -> None:
    report = audits.report(batch)
    assert report is not None
    info = report.batch
    assert info.complete, info
    assert info.total == len(targets) == len(report.rows)
    assert [r.target for r in report.rows] == targets
    assert sum(info.counts[s] for s in ("pass", "fail", "error", "timeout")) == len(targets)
    assert info.counts["pending"] == info.counts["running"] == 0
    assert info.done == len(targets)
    failing = {r.target for r in report.rows if r.state == "fail"}
    assert failing == {t for t in targets if t.startswith("bad-")}
    assert all(r.state == "pass" for r in report.rows if not r.target.startswith("bad-"))


def test_500_targets_over_two_nodes(
    start_worker: Callable[..., support.Worker], audits: Audits, tag: str
) -> None:
    w1 = start_worker("a1", [f"tag-{tag}"])
    w2 = start_worker("a2", [f"tag-{tag}"])
    targets = _targets(N)
    batch = audits.submit("noop", targets, {"fail": "bad-*", "sleep_s": 0.01}, tag=tag)
    info = audits.wait(batch, timeout_s=180)
    _assert_complete(audits, batch, targets)
    assert info.resent == 0  # no repair path was needed: the messages themselves did it
    report = audits.report(batch)
    assert report is not None
    nodes = {r.node for r in report.rows}
    assert nodes == {"a1", "a2"}, nodes  # spread over both nodes
    failed = audits.report(batch, failed_only=True)
    assert failed is not None
    assert {r.target for r in failed.rows} == {t for t in targets if t.startswith("bad-")}
    # a second delivery of a finished item is a no-op
    assert w1.alive()
    assert w2.alive()


def test_kill_9_mid_batch_still_500_results(
    start_worker: Callable[..., support.Worker], audits: Audits, tag: str
) -> None:
    fast = {"CTXPOOL_AUDIT_SWEEP_S": "1", "CTXPOOL_AUDIT_GRACE_S": "1",
            "CTXPOOL_AUDIT_PENDING_AFTER_S": "3"}  # fmt: skip
    victim = start_worker("k1", [f"tag-{tag}"], concurrency=4, **fast)
    start_worker("k2", [f"tag-{tag}"], concurrency=4, **fast)
    targets = _targets(N)
    batch = audits.submit(
        "noop", targets, {"fail": "bad-*", "sleep_s": 0.05, "timeout_s": 2}, tag=tag
    )
    support.wait_for(lambda: _done(audits, batch) >= 60, 60, what="some progress")
    assert victim.proc is not None
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    info = audits.wait(batch, timeout_s=180)
    _assert_complete(audits, batch, targets)
    assert info.resent > 0, "the sweep sent no stuck item again: the repair path is untested"
    assert info.attempts >= N


def test_cli_progress_bar_updates(
    start_worker: Callable[..., support.Worker], pool_env: dict[str, str], tag: str
) -> None:
    start_worker("p1", [f"tag-{tag}"], concurrency=2)
    env = {**os.environ, **pool_env}
    proc = subprocess.run(
        [sys.executable, "-m", "pool.cli", "audit", "run", "noop", "--tag", tag,
         "--param", "sleep_s=0.02", "--param", "fail=bad-*", "--wait", "--interval", "0.2",
         *_targets(150)],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # some targets fail: exit status 1
    lines = [ln for ln in proc.stdout.replace("\r", "\n").splitlines() if "/150" in ln]
    done = [int(ln.split("/150")[0].split()[-1]) for ln in lines]
    assert len(set(done)) >= 3, lines  # it moved while the batch ran
    assert done == sorted(done)
    assert done[-1] == 150


def test_two_beats_one_batch(
    start_worker: Callable[..., support.Worker],
    pool_env: dict[str, str],
    audits: Audits,
    tag: str,
    tmp_path: Path,
) -> None:
    name = f"every-minute-{tag}"
    sched = [{"name": name, "check": "noop", "targets": ["a", "b", "c"], "cron": "* * * * *",
              "tag": tag}]  # fmt: skip
    env = {**os.environ, **pool_env, "CTXPOOL_AUDIT_SCHEDULES": json.dumps(sched)}
    worker = start_worker("b1", [f"tag-{tag}"], CTXPOOL_AUDIT_SCHEDULES=json.dumps(sched))
    beats = []
    for i in range(2):
        log = (tmp_path / f"beat{i}.log").open("w")
        beats.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "pool", "beat", "-l", "info",
             "-s", str(tmp_path / f"beat{i}.db"), "--pidfile", str(tmp_path / f"beat{i}.pid")],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
    try:
        support.wait_for(
            lambda: worker.log().count("tasks.audits.scheduled") >= 4, 150, what="two firings"
        )
        support.wait_for(lambda: worker.log().count(f"schedule {name}: batch") >= 2, 30)
    finally:
        for b in beats:
            b.terminate()
            b.wait(20)
    mine = [i for i in audits.recent(100) if i.label.startswith(f"schedule {name} ")]
    assert len(mine) == 1, [i.batch for i in mine]
    log = worker.log()
    assert f"schedule {name}: batch {mine[0].batch} created" in log, log[-3000:]
    assert f"schedule {name}: batch {mine[0].batch} existed" in log, log[-3000:]
    audits.wait(mine[0].batch, timeout_s=60)

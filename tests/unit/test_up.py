"""Pure parts of ``ctxpool up``: Flower credentials, the embedded Redis command, child
process groups, the status screen."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from pool.contexts.models import ContextStatus, Desired, RunState
from pool.membership import Membership, NodeStats, NodeView
from pool.settings import Settings
from pool.status import QueueDepth, StatusReport, render_status
from pool.up import redis as embedded
from pool.up.flower import flower_auth
from pool.up.procs import ChildFailedError, Children


def test_flower_password_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)  # type: ignore[call-arg]
    first = flower_auth(settings)
    assert first.generated
    assert len(first.password) >= 20
    path = tmp_path / "flower-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert flower_auth(settings) == first  # the same on the next start
    configured = Settings(state_dir=tmp_path, flower_password="s3cret")  # type: ignore[call-arg]
    auth = flower_auth(configured)
    assert (auth.password, auth.generated) == ("s3cret", False)
    assert auth.basic_auth == "ctxpool:s3cret"


def test_embedded_redis_command(tmp_path: Path) -> None:
    binary = embedded.redis_server_binary()
    assert Path(binary).is_file()
    cmd = embedded.redis_command(binary, tmp_path / "data", 6390)
    args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert args["--port"] == "6390"
    assert args["--bind"] == "127.0.0.1"
    assert args["--appendonly"] == "yes"
    assert args["--maxmemory-policy"] == "noeviction"
    assert (tmp_path / "data").is_dir()


def test_children_stop_takes_the_whole_group(tmp_path: Path) -> None:
    kids = Children(tmp_path)
    # a parent that ignores SIGTERM and has a grandchild: both must be gone
    script = (
        "import os, signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    child = kids.start("stubborn", [sys.executable, "-c", script], dict(os.environ))
    deadline = time.monotonic() + 10
    while not child.log_path.read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    grandchild = int(child.log_path.read_text().split()[0])
    kids.stop_all(deadline_s=2.0)
    assert not child.alive()

    def gone() -> bool:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            return True
        return False

    deadline = time.monotonic() + 5  # reaped by init shortly after the kill
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()


def test_wait_ready_reports_an_exit_with_its_log(tmp_path: Path) -> None:
    kids = Children(tmp_path)
    child = kids.start("bad", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], {})
    with pytest.raises(ChildFailedError, match=r"(?s)bad exited \(3\).*boom"):
        kids.wait_ready(child, lambda: False, 10, "ready")


def test_status_screen() -> None:
    now = 1000.0
    record = Membership(
        node="n1", worker_id="n1@h", incarnation="i", tags=["ci"],
        stats=NodeStats(running_contexts=2, capacity=5),
    )  # fmt: skip
    report = StatusReport(
        at=now,
        nodes=[NodeView(name="n1", alive=True, last_seen=now - 3, record=record)],
        contexts=3,
        by_state={"running": 2, "failed": 1},
        last_errors=[
            ContextStatus(
                uuid="m1",
                desired=Desired.PRESENT,
                state=RunState.FAILED,
                last_error="image 'x' not allowed",
                updated_at=now - 10,
            )
        ],
        queues=[QueueDepth(queue="tag-ci", depth=4), QueueDepth(queue="node-n1", depth=None)],
        limits=[],
    )
    text = render_status(report)
    assert "n1    alive  active  ci    2/5   0.00   3s" in text
    assert "CONTEXTS (3): running 2, failed 1" in text
    assert "m1 [failed] 10s ago: image 'x' not allowed" in text
    assert "tag-ci=4  node-n1=?" in text

"""Fault 2 (issue 8): every Redis error becomes ``StoreError``; the CLI prints one line.

No Redis is needed: the store points at a port nothing listens on.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from pool.contexts.models import Desired
from pool.contexts.store import StateStore
from pool.errors import StoreError
from pool.limits.limiter import RedisLimiter
from pool.limits.spec import LimitSpec
from tests.support import REPO


def dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


DEAD = dead_url()
STORE_CALLS: list[tuple[str, Callable[[StateStore], Any]]] = [
    ("iter_context_ids", lambda st: list(st.iter_context_ids())),
    ("get_desired", lambda st: st.get_desired("m1")),
    ("put_desired", lambda st: st.put_desired("m1", Desired.ABSENT)),
    ("status", lambda st: st.status("m1")),
    ("statuses", lambda st: st.statuses(["m1"])),
    ("claim", lambda st: st.ownership.claim("m1", "n", None)),
    ("lock_acquire", lambda st: st.locks.acquire("m1", "t", 1.0)),
    ("owned_by", lambda st: st.ownership.owned_by("n")),
    ("sweep_rows", lambda st: st.sweep_rows(["m1"])),
    ("check_server", lambda st: st.check_server()),
    ("members.nodes", lambda st: st.members.nodes()),
    ("members.is_alive", lambda st: st.members.is_alive("n")),
    ("last_resync", lambda st: st.last_resync()),
]


@pytest.mark.parametrize(("name", "call"), STORE_CALLS, ids=[n for n, _ in STORE_CALLS])
def test_store_calls_raise_store_error(name: str, call: Callable[[StateStore], Any]) -> None:
    st = StateStore.from_url(DEAD)
    with pytest.raises(StoreError):
        call(st)


def test_limiter_calls_raise_store_error() -> None:
    limiter = RedisLimiter.from_url(DEAD)
    spec = LimitSpec(rate="5/s")
    for call in (
        lambda: limiter.acquire("l", "*", spec, "h"),
        lambda: limiter.counters("l"),
        lambda: limiter.bucket_keys("l"),
        lambda: limiter.waiting("l", 10.0),
    ):
        with pytest.raises(StoreError):
            call()


@pytest.mark.parametrize(
    "argv",
    [["contexts"], ["contexts", "--json"], ["nodes"], ["limits"], ["metrics", "--port", "0"]],
)
def test_cli_with_redis_down_prints_one_line_and_fails(argv: list[str]) -> None:
    env = {**os.environ, "CTXPOOL_REDIS_URL": DEAD, "CTXPOOL_BROKER_URL": DEAD}
    proc = subprocess.run(
        [sys.executable, "-m", "pool.cli", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ctxpool: "), lines[0]
    assert "cannot reach Redis" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_converting_refuses_generators() -> None:
    from pool.redisutil import converting

    def gen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        converting("x")(gen)

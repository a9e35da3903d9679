"""The node's own metrics: Docker errors counted by kind at the conversion point, contexts by
state, and prometheus_client's multiprocess mode as the node sets it up (in a subprocess of
the test's own that forks, as a prefork pool does)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import docker.errors
import fakeredis
import pytest
import redis
import requests
from prometheus_client import CollectorRegistry, generate_latest

from pool.contexts.dockerapi import convert, error_kind
from pool.contexts.models import RunState
from pool.contexts.outcomes import Outcome
from pool.contexts.store import StateStore
from pool.instruments import DOCKER_ERROR_KINDS, Instruments
from pool.node.metrics import ContextStateCollector
from tests.support import REPO


def api_error(status: int) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(f"HTTP {status}", response=response, explanation="nope")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (requests.exceptions.ConnectionError("refused"), "unavailable"),
        (docker.errors.DockerException("Error while fetching server API version: connect"),
         "unavailable"),
        (api_error(404), "not-found"),
        (api_error(409), "conflict"),
        (api_error(400), "permanent"),
        (docker.errors.InvalidArgument("bad mem_limit"), "permanent"),
        (api_error(500), "other"),
        (requests.exceptions.ReadTimeout("slow"), "other"),
    ],
)  # fmt: skip
def test_convert_counts_each_docker_error_by_kind(exc: Exception, kind: str) -> None:
    metrics = Instruments()
    err = convert(exc, "create x", metrics)
    assert error_kind(err) == kind
    counts = {
        k: sample(metrics.registry, "ctxpool_docker_errors_total", kind=k)
        for k in DOCKER_ERROR_KINDS
    }
    assert counts == {k: (1.0 if k == kind else 0.0) for k in DOCKER_ERROR_KINDS}


def test_outcomes_show_at_zero_and_count_with_their_duration() -> None:
    metrics = Instruments()
    metrics.declare_outcomes(o.value for o in Outcome)
    text = generate_latest(metrics.registry).decode()
    for outcome in (*Outcome, "exception"):
        assert f'ctxpool_reconciles_total{{outcome="{outcome}"}} 0.0' in text
    metrics.reconciled("converged", 0.2)
    metrics.reconciled("converged", 7.0)
    metrics.reconciled("busy", 0.001)
    reg = metrics.registry
    assert sample(reg, "ctxpool_reconciles_total", outcome="converged") == 2
    assert sample(reg, "ctxpool_reconciles_total", outcome="busy") == 1
    assert sample(reg, "ctxpool_reconcile_duration_seconds_count", outcome="converged") == 2
    assert sample(reg, "ctxpool_reconcile_duration_seconds_sum", outcome="converged") == 7.2
    assert sample(reg, "ctxpool_reconcile_duration_seconds_bucket", outcome="converged",
                  le="0.25") == 1  # fmt: skip
    metrics.leases_renewed("renewed", 3)
    metrics.leases_renewed("lost", 0)
    metrics.lease_stolen()
    metrics.gate_admitted("http", 0.3)
    metrics.gate_holds("http", 4)
    assert sample(reg, "ctxpool_lease_renewals_total", result="renewed") == 3
    assert sample(reg, "ctxpool_lease_renewals_total", result="lost") == 0
    assert sample(reg, "ctxpool_lease_steals_total") == 1
    assert sample(reg, "ctxpool_gate_wait_seconds_count", limit="http") == 1
    assert sample(reg, "ctxpool_gate_waiting", limit="http") == 4


def test_contexts_by_state_counts_owned_and_parked_contexts() -> None:
    store = StateStore(fakeredis.FakeRedis(decode_responses=True), "t:")
    r, k = store.redis, store.keys
    r.sadd(k.owned("n1"), "a", "b", "c", "d")
    r.sadd(k.parked("n1"), "p")
    r.sadd(k.owned("n2"), "other")
    r.hset(k.status("a"), "state", "running")
    r.hset(k.status("b"), "state", "running")
    r.hset(k.status("c"), "state", "error")
    # d: no status yet (just claimed) -> pending
    r.hset(k.status("p"), "state", "failed")
    r.hset(k.status("other"), "state", "running")
    registry = CollectorRegistry()
    registry.register(ContextStateCollector("n1", store))
    got = {
        s.value: sample(registry, "ctxpool_contexts_by_state", node="n1", state=s.value)
        for s in RunState
    }
    assert got == {"pending": 1, "running": 2, "removed": 0, "error": 1, "failed": 1}


def test_contexts_by_state_is_left_out_while_redis_is_down() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    registry = CollectorRegistry()
    registry.register(ContextStateCollector("n1", StateStore(client, "t:")))  # type: ignore[arg-type]
    assert "ctxpool_contexts_by_state" not in generate_latest(registry).decode()


MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from prometheus_client import CollectorRegistry, generate_latest
    from pool.instruments import (
        enable_multiprocess, instruments, node_collector, process_exited,
    )

    path = Path(sys.argv[1])
    instruments().reconciled("converged", 0.1)  # before the switch: not this start's
    enable_multiprocess(path)
    instruments().reconciled("converged", 0.1)  # the main process (a threads pool)
    instruments().gate_holds("http", 2)
    children = []
    for n in (1, 2):  # a prefork pool's children
        pid = os.fork()
        if pid == 0:
            for _ in range(3):
                instruments().reconciled("converged", 0.1)
            instruments().gate_holds("http", 10 * n)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    process_exited(children[0])  # the first one's live gauge goes; its counts stay
    registry = CollectorRegistry()
    registry.register(node_collector())
    sys.stdout.write(generate_latest(registry).decode())
    """
)


def test_multiprocess_mode_merges_forked_processes_and_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "metrics" / "n1"
    path.mkdir(parents=True)
    (path / "counter_1.db").write_bytes(b"left over from an earlier start")
    out = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT, str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert 'ctxpool_reconciles_total{outcome="converged"} 7.0' in lines, out.stdout
    assert 'ctxpool_reconcile_duration_seconds_count{outcome="converged"} 7.0' in lines
    assert 'ctxpool_gate_waiting{limit="http"} 22.0' in lines  # main 2 + second child 20
    assert not (path / "counter_1.db").exists()

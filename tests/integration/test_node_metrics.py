"""A node's own metrics: counted where the work happens (a reconciler on a real Redis), and
served live by real nodes (``--pool threads`` and ``--pool prefork``) that reconciled contexts
and admitted limited calls: every node metric the README documents, with live values."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

import tasks.integrations as ti
from pool.appconfig import CtxpoolCelery, create_app
from pool.audits.service import Audits
from pool.calls.http import HttpRequest
from pool.contexts.api import ContextAPI
from pool.contexts.engine import EnsureAction, EnsureResult
from pool.contexts.lease import LeaseRenewer
from pool.contexts.models import ContextSpec, Desired, Nudge, RunState
from pool.contexts.outcomes import NodeIdentity, Outcome
from pool.contexts.reconcile import Reconciler
from pool.contexts.store import StateStore
from pool.instruments import Instruments
from pool.settings import Settings
from tests import support
from tests.conftest import _settings_from
from tests.support import RecordingServer, Worker, free_port, wait_for
from tests.unit.test_metrics_doc import documented

pytestmark = pytest.mark.integration


class StubEngine:
    """Creates take ``delay_s``; ``fail`` makes them raise an unexpected error."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.fail = False

    def ensure(self, spec: ContextSpec, generation: int, owner: str, fresh: bool = False) -> Any:
        if self.fail:
            raise RuntimeError("unexpected")
        time.sleep(self.delay_s)
        return EnsureResult(EnsureAction.CREATED, "cid")

    def list_containers(self, owner: str | None = None, uuid: str | None = None) -> list[Any]:
        return []

    def remove(self, uuid: str, owner: str) -> int:
        return 0


def _value(metrics: Instruments, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    assert value is not None, (name, labels)
    return value


def test_reconciles_leases_and_steals_are_counted(redis_conn: redis.Redis) -> None:
    store = StateStore(redis_conn, "nm:")
    metrics = Instruments()
    engine = StubEngine(delay_s=1.0)
    node = NodeIdentity(name="node-a", tags=frozenset({"ci"}), capacity=5)
    settings = Settings(lock_ttl_s=0.6)
    rec = Reconciler(store, engine, settings, node, lambda n, q: None, None, metrics)  # type: ignore[arg-type]
    for uuid in ("m1", "m2", "m3"):
        spec = ContextSpec(uuid=uuid, context="c", image="i:1", tag="ci")
        store.put_desired(uuid, Desired.PRESENT, spec)

    # work longer than the lease's TTL: renewed while it runs, by the reconciler's renewer
    worker = threading.Thread(target=rec.reconcile, args=(Nudge(uuid="m1"),))
    worker.start()
    wait_for(lambda: store.redis.exists(store.keys.lock("m1")), 5, 0.01, what="m1 leased")
    assert rec.reconcile(Nudge(uuid="m1")) is Outcome.BUSY
    worker.join()
    assert _value(metrics, "ctxpool_reconciles_total", outcome="converged") == 1
    assert _value(metrics, "ctxpool_reconciles_total", outcome="busy") == 1
    assert _value(metrics, "ctxpool_reconcile_duration_seconds_count", outcome="converged") == 1
    # the 1 s create was measured, the busy answer was not made to wait for it
    assert _value(metrics, "ctxpool_reconcile_duration_seconds_sum", outcome="converged") >= 1.0
    assert _value(metrics, "ctxpool_lease_renewals_total", result="renewed") >= 1
    assert _value(metrics, "ctxpool_lease_renewals_total", result="lost") == 0

    # a lease left by an earlier start of this node: taken over and counted
    dead = f"node-a|{'0' * 16}|{os.getpid()}|dead"
    assert store.locks.acquire("m2", dead, 30.0)[0]
    engine.delay_s = 0.0
    assert rec.reconcile(Nudge(uuid="m2")) is Outcome.CONVERGED
    assert _value(metrics, "ctxpool_lease_steals_total") == 1

    # work that raises: counted as an exception, and re-raised
    engine.fail = True
    with pytest.raises(RuntimeError):
        rec.reconcile(Nudge(uuid="m3"))
    assert _value(metrics, "ctxpool_reconciles_total", outcome="exception") == 1

    # a lease found expired at a renewal; a round Redis did not answer
    with rec.leases.holding("m4", "never-acquired"):
        rec.leases.renew_now()
    assert _value(metrics, "ctxpool_lease_renewals_total", result="lost") == 1
    down = StateStore(redis.Redis(port=1, socket_connect_timeout=0.2, decode_responses=True))
    renewer = LeaseRenewer(down, 30.0, metrics)
    with renewer.holding("a", "t1"), renewer.holding("b", "t2"):
        renewer.renew_now()
    assert _value(metrics, "ctxpool_lease_renewals_total", result="failed") == 2


# ---- live nodes --------------------------------------------------------------------------

LIMITS = {"CTXPOOL_LIMITS": "mhttp=20/s burst 1"}
LIMIT_QUEUES = ["limit-mhttp"]


@pytest.fixture
def lim_app(pool_env: dict[str, str]) -> Iterator[CtxpoolCelery]:
    support.purge_queues(LIMIT_QUEUES)
    app = create_app()
    app.use_settings(_settings_from({**pool_env, **LIMITS}))
    yield app
    app.close()
    support.purge_queues(LIMIT_QUEUES)


def _scrape(port: int) -> dict[str, Any]:
    """``{"types": {family: type}, "samples": {(name, labels...): value}}`` of a node."""
    from tests.integration.test_health import _get

    status, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    types, samples = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, *sorted(s.labels.items()))] = s.value
    return {"types": types, "samples": samples, "text": text}


def _get_sample(page: dict[str, Any], name: str, **labels: str) -> float | None:
    return page["samples"].get((name, *sorted(labels.items())))


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_live_node_serves_every_documented_metric(
    pool: str,
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    lim_app: CtxpoolCelery,
    ctx_name: str,
    test_image: str,
    tmp_path: Path,
) -> None:
    node, port, n = f"nm-{pool}", free_port(), 3
    worker = start_worker(
        node, ["tag-ci"], pool=pool, concurrency=2, CTXPOOL_NODE_METRICS_PORT=str(port), **LIMITS
    )
    uuids = [str(uuidlib.uuid4()) for _ in range(n)]
    for uuid in uuids:
        api.apply(ContextSpec(uuid=uuid, context=ctx_name, image=test_image, tag="ci"))
    broken = str(uuidlib.uuid4())  # an image the engine lacks (pulls are off): parked
    api.apply(ContextSpec(uuid=broken, context=ctx_name, image="ctxpool-test/absent:1", tag="ci"))
    wait_for(
        lambda: (
            [s.state for s in store.statuses([*uuids, broken])]
            == [RunState.RUNNING] * n + [RunState.FAILED]
        ),
        60,
        0.2,
        what="contexts running, the broken one failed",
    )
    calls = 5
    with RecordingServer() as srv:
        for i in range(calls):
            ti.submit_http(HttpRequest(url=f"{srv.url}/m/{i}", limit="mhttp"), app=lim_app)
        wait_for(lambda: len(srv.served()) >= calls, 60, 0.2, what="limited calls served")
    # an audit item on the node's tag: the item duration histogram has samples
    audits = Audits(lim_app)
    batch = audits.submit("noop", ["t-1", "t-2"], {}, tag="ci")
    assert audits.wait(batch, timeout_s=60).complete

    def settled() -> dict[str, Any] | None:
        page = _scrape(port)
        ok = (
            _get_sample(page, "ctxpool_contexts_by_state", node=node, state="running") == n
            and (_get_sample(page, "ctxpool_gate_wait_seconds_count", limit="mhttp") or 0) >= calls
        )
        return page if ok else None

    page = wait_for(settled, 20, 0.3, what="metrics caught up")
    # every documented node metric is there, with its type
    for name, (kind, _labels) in documented()["node"].items():
        family = name.removesuffix("_total") if kind == "counter" else name
        assert page["types"].get(family) == kind, (name, page["text"])
    # ... with live values: reconciles ran in pool processes (children under prefork)
    assert _get_sample(page, "ctxpool_reconciles_total", outcome="converged") >= n
    assert _get_sample(page, "ctxpool_reconciles_total", outcome="parked") >= 1
    assert _get_sample(page, "ctxpool_reconcile_duration_seconds_count", outcome="converged") >= n
    assert _get_sample(page, "ctxpool_contexts_by_state", node=node, state="failed") == 1
    assert _get_sample(page, "ctxpool_contexts_by_state", node=node, state="error") == 0
    assert _get_sample(page, "ctxpool_docker_errors_total", kind="not-found") >= 1  # the image
    assert _get_sample(page, "ctxpool_gate_waiting", limit="mhttp") == 0
    assert _get_sample(page, "ctxpool_engine_up", node=node) == 1
    assert _get_sample(page, "ctxpool_loop_up", component="node", loop="heartbeat") == 1
    for result in ("renewed", "lost", "failed"):
        assert _get_sample(page, "ctxpool_lease_renewals_total", result=result) is not None
    assert _get_sample(page, "ctxpool_lease_steals_total") == 0
    assert (
        _get_sample(page, "ctxpool_audit_item_duration_seconds_count", check="noop", result="pass")
        == 2
    )

    files = list((tmp_path / "state" / "metrics" / node).glob("counter_*.db"))
    pids = {int(re.sub(r"\D", "", f.name)) for f in files}
    assert worker.proc is not None
    if pool == "prefork":  # the counts above came from the children's files
        assert pids - {worker.proc.pid}, files
    else:
        assert pids == {worker.proc.pid}, files

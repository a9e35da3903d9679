"""Global limits with real workers (prefork), a real Redis and a loopback HTTP server."""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import redis

import tasks.integrations as ti
from pool.appconfig import CtxpoolCelery
from pool.calls.http import HttpRequest
from pool.limits.limiter import RedisLimiter
from pool.limits.spec import LimitSpec
from tests import support
from tests.support import RecordingServer, Worker, wait_for, window_counts

pytestmark = pytest.mark.integration

StartWorker = Callable[..., Worker]


def _submit(app: CtxpoolCelery, url: str, n: int, limit: str = "http", **req: object) -> list[str]:
    return [
        ti.submit_http(HttpRequest(url=f"{url}/call/{i}", limit=limit, **req), app=app)  # type: ignore[arg-type]
        for i in range(n)
    ]


def _limiter(pool_env: dict[str, str]) -> RedisLimiter:
    return RedisLimiter.from_url(support.test_redis_url(), pool_env["CTXPOOL_KEY_PREFIX"])


@pytest.fixture
def limits_env(pool_env: dict[str, str]) -> dict[str, str]:
    """Limits every process of the test shares (producer and nodes read the same config)."""
    return {
        "CTXPOOL_LIMITS": "http=20/s burst 1 per {host}; "
        "slow=100/s burst 100 concurrency 4 slot-ttl 3s; "
        "crawl=1/m; fast=200/s burst 20",
    }


TEST_QUEUES = ["limit-http", "limit-slow", "limit-crawl", "limit-fast", "tag-default"]


@pytest.fixture
def lim_app(
    producer_app: CtxpoolCelery, limits_env: dict[str, str], pool_env: dict[str, str]
) -> Iterator[CtxpoolCelery]:
    from pool.appconfig import create_app
    from tests.conftest import _settings_from

    support.purge_queues(TEST_QUEUES)
    app = create_app()
    app.use_settings(_settings_from({**pool_env, **limits_env}))
    yield app
    app.close()
    support.purge_queues(TEST_QUEUES)


def test_global_rate_holds_across_nodes_and_processes(
    start_worker: StartWorker, lim_app: CtxpoolCelery, limits_env: dict[str, str]
) -> None:
    """3 worker processes on 2 nodes, 20/s: no window over the limit, nothing lost or doubled."""
    n, rate, burst = 600, 20.0, 1
    with RecordingServer() as srv:
        start_worker("la", ["tag-x"], pool="prefork", concurrency=2, **limits_env)
        start_worker("lb", ["tag-x"], pool="prefork", concurrency=1, **limits_env)
        started = time.monotonic()
        _submit(lim_app, srv.url, n)
        wait_for(lambda: len(srv.served()) >= n, 90, 0.2, what="600 calls served")
        time.sleep(0.5)
        served = srv.served()
    times = [t for t, _ in served]
    paths = Counter(p for _, p in served)
    assert len(paths) == n
    assert max(paths.values()) == 1, "a call arrived twice"
    assert max(window_counts(times, 1.0)) <= rate + burst
    assert max(window_counts(times, 10.0)) <= 10 * rate * 1.02
    ideal_s = n / rate
    print(
        f"600 calls: first->last {max(times) - min(times):.2f}s, submit->last "
        f"{max(times) - started:.2f}s (ideal {ideal_s:.0f}s); busiest 1s "
        f"{max(window_counts(times, 1.0))}, busiest 10s {max(window_counts(times, 10.0))}"
    )
    assert max(times) - started <= ideal_s * 1.10
    counters = _limiter_counters(lim_app)
    # a call admitted but started late goes back for a new token: granted twice, run once
    assert counters["granted"] - counters["stale"] == n


def _limiter_counters(app: CtxpoolCelery) -> dict[str, int]:

    return app.runtime.limiter.counters("http")


def test_concurrency_limit_survives_kill9(
    start_worker: StartWorker,
    lim_app: CtxpoolCelery,
    limits_env: dict[str, str],
    pool_env: dict[str, str],
) -> None:
    """Never more than 4 calls in flight; a SIGKILLed holder's slots come back after their TTL."""
    limiter = _limiter(pool_env)
    spec = LimitSpec.parse("100/s burst 100 concurrency 4 slot-ttl 3s")
    with RecordingServer(delay_s=1.5) as srv:
        victim = start_worker("ka", ["tag-x"], concurrency=6, **limits_env)
        _submit(lim_app, srv.url, 10, limit="slow")
        wait_for(lambda: srv.in_flight >= 4, 20, 0.05, what="4 calls in flight")
        time.sleep(0.3)
        assert srv.in_flight == 4  # 6 threads, 10 calls: the limit, not the pool, caps it
        victim.kill()  # holds all 4 slots and never releases them
        killed_at = time.monotonic()
        assert limiter.bucket("slow", "*", spec).in_flight == 4
        start_worker("kb", ["tag-x"], concurrency=6, **limits_env)
        # the survivor starts the remaining calls only once the dead holder's leases expired
        # (renewed every TTL/3, so 2-3 s after the kill)
        first = wait_for(lambda: len(srv.arrivals) > 4 and srv.arrivals[4][0], 20, 0.02)
        assert first - killed_at >= 2.0 - 0.1
        wait_for(lambda: srv.in_flight == 0, 20, 0.05, what="the other calls to end")
        srv.max_in_flight = 0
        _submit(lim_app, f"{srv.url}/after", 8, limit="slow")
        wait_for(lambda: srv.max_in_flight >= 4, 30, 0.05, what="full concurrency again")
        wait_for(lambda: len([p for _, p in srv.served() if p.startswith("/after")]) >= 8, 30, 0.1)
        assert srv.max_in_flight == 4  # not shrunk by the dead holder, never exceeded


def test_retry_after_backs_off_and_loses_nothing(
    start_worker: StartWorker, lim_app: CtxpoolCelery, limits_env: dict[str, str]
) -> None:
    """429 + Retry-After: 2 s -> the next call to that host waits >= 2 s; every call lands once."""
    with RecordingServer(throttle_first=1, retry_after_s=2) as srv:
        start_worker("ra", ["tag-x"], pool="prefork", concurrency=2, **limits_env)
        ids = _submit(lim_app, srv.url, 5, limit="fast")
        wait_for(lambda: len(srv.served()) >= 5, 60, 0.1, what="5 calls served")
        time.sleep(0.5)
        arrivals = list(srv.arrivals)
    throttled = [t for t, _, s in arrivals if s == 429]
    served = [(t, p) for t, p, s in arrivals if s == 200]
    assert len(throttled) == 5
    assert sorted(p for _, p in served) == sorted(f"/call/{i}" for i in range(5))
    # after each 429 the whole host is held back for Retry-After
    first_429 = min(throttled)
    assert min(t for t, _ in served) - first_429 >= 2.0 - 0.05
    for task_id in ids:
        result = ti.result(task_id, app=lim_app)
        assert result is not None
        assert (result.outcome, result.status, result.attempts) == ("ok", 200, 2)


def test_backlog_stays_in_the_broker(
    start_worker: StartWorker,
    lim_app: CtxpoolCelery,
    limits_env: dict[str, str],
) -> None:
    """20,000 throttled calls queued: flat worker memory; other queues keep their latency."""
    with RecordingServer() as srv:
        worker = start_worker(
            "ba",
            ["tag-x", "tag-default"],
            pool="prefork",
            concurrency=2,
            app="tests.extra_app",
            CTXPOOL_TEST_CELERY_RATE="1000/s",
            **limits_env,
        )
        latency_before = _plain_latencies(lim_app, srv, "before")
        time.sleep(1)
        rss_idle = worker.rss_kb()
        _bulk_submit(lim_app, srv.url, 20_000, limit="crawl")
        time.sleep(5)  # the gate has had time to take whatever it would take
        latency_during = _plain_latencies(lim_app, srv, "during")
        rss_loaded = worker.rss_kb()
        depth = support.queue_depth("limit-crawl")
        crawled = len([p for _, p in srv.served() if p.startswith("/bulk/")])
    print(
        f"rss idle {rss_idle} KiB, with backlog {rss_loaded} KiB; plain-task latency median "
        f"{statistics.median(latency_before) * 1000:.1f} ms before, "
        f"{statistics.median(latency_during) * 1000:.1f} ms with backlog"
    )
    assert crawled == 1  # 1/m: one call went, the rest wait
    assert depth >= 20_000 - 2  # one admitted, at most one held by the gate
    assert rss_loaded - rss_idle <= 30 * 1024, (rss_idle, rss_loaded)
    assert statistics.median(latency_during) <= 3 * statistics.median(latency_before) + 0.02


def _plain_latencies(app: CtxpoolCelery, srv: RecordingServer, tag: str) -> list[float]:
    """Send-to-arrival latency of an unlimited task on another queue (tag-default)."""
    out = []
    for i in range(20):
        path = f"/plain-{tag}/{i}"
        sent = time.monotonic()
        app.send_task("tests.celery_http", args=[f"{srv.url}{path}"], queue="tag-default")
        arrived = wait_for(
            lambda p=path: next((t for t, q in srv.served() if q == p), None), 10, 0.001
        )
        out.append(arrived - sent)
    return out


def _bulk_submit(app: CtxpoolCelery, url: str, n: int, limit: str) -> None:
    """Queue ``n`` calls fast: one producer connection, kombu pipelining where available."""
    task = app.tasks[ti.HTTP_TASK]
    with app.producer_or_acquire() as producer:
        for i in range(n):
            req = HttpRequest(url=f"{url}/bulk/{i}", limit=limit)
            task.apply_async(
                kwargs={"request": req.model_dump(mode="json", by_alias=True)}, producer=producer
            )


def test_unknown_limit_fails_at_start(
    pool_env: dict[str, str], tmp_path: pytest.TempPathFactory
) -> None:
    worker = Worker(
        "bad",
        ["tag-x"],
        tmp_path,  # type: ignore[arg-type]
        env={**pool_env, "CTXPOOL_TEST_TASK_LIMIT": "no-such-limit"},
        app="tests.extra_app",
    ).start()
    try:
        assert worker.proc is not None
        worker.proc.wait(60)
        assert worker.proc.returncode != 0
        assert "tests.needs_limit (limit 'no-such-limit')" in worker.log()
    finally:
        worker.stop()


def test_limits_cli_shows_backlog(
    start_worker: StartWorker,
    lim_app: CtxpoolCelery,
    limits_env: dict[str, str],
    pool_env: dict[str, str],
    redis_conn: redis.Redis,
) -> None:
    import json
    import os
    import subprocess
    import sys

    with RecordingServer() as srv:
        start_worker("ca", ["tag-x"], **limits_env)
        _submit(lim_app, srv.url, 5, limit="crawl")
        wait_for(lambda: len(srv.served()) >= 1, 20, 0.1)
        time.sleep(1.5)  # a gate report
        out = subprocess.run(
            [sys.executable, "-m", "pool.cli", "limits", "--json"],
            env={**os.environ, **pool_env, **limits_env},
            capture_output=True,
            text=True,
            check=True,
        )
    views = {v["name"]: v for v in json.loads(out.stdout)}
    crawl = views["crawl"]
    assert crawl["counters"]["granted"] == 1
    assert crawl["held"] == 1  # the gate holds the next one, waiting for a token
    assert crawl["queued"] == 3
    assert crawl["buckets"][0]["tokens"] == 0.0
    assert crawl["buckets"][0]["blocked_s"] > 50


def test_node_writes_owner_and_errors_back_to_drp(
    start_worker: StartWorker,
    api: object,
    ctx_name: str,
    test_image: str,
) -> None:
    """A claim sets docker-context/owner; an error sets docker-context/error; a fix clears it."""
    from pool.contexts.api import ContextAPI
    from pool.contexts.models import ContextSpec

    assert isinstance(api, ContextAPI)
    owner_path = "/api/v3/machines/m1/params/docker-context%2Fowner"
    error_path = "/api/v3/machines/m1/params/docker-context%2Ferror"
    with RecordingServer() as drp:
        start_worker("wb", ["tag-ci"], CTXPOOL_DRP_URL=drp.url, CTXPOOL_DRP_TOKEN="drp-secret")

        def calls(method: str, path: str) -> list[tuple[str, str, str, str]]:
            return [r for r in list(drp.requests) if r[0] == method and r[1] == path]

        bad = ContextSpec(
            uuid="m1", context=ctx_name, image="ctxpool-test/absent:1", tag="ci", token="t"
        )
        api.apply(bad)
        wait_for(lambda: calls("POST", error_path), 30, 0.1, what="error param")
        assert calls("POST", owner_path)[0][2] == '"wb"'
        assert calls("POST", owner_path)[0][3] == "Bearer drp-secret"
        assert "absent" in calls("POST", error_path)[0][2]
        api.apply(bad.model_copy(update={"image": test_image}))
        wait_for(lambda: calls("DELETE", error_path), 30, 0.1, what="error cleared")
        time.sleep(1)
        assert len(calls("POST", owner_path)) == 1  # written once, not on every reconcile
        assert len(calls("POST", error_path)) == 1


def test_node_drp_write_back_uses_one_user_token_and_renews_it_on_401(
    start_worker: StartWorker, producer_app: CtxpoolCelery
) -> None:
    """With a DRP user and password, a node (one process, 4 threads) fetches one user token
    for all its write-backs and sends it as Bearer; when DRP refuses it (401), the call renews
    it once and succeeds instead of failing."""
    from broker_bridge.drpsim import DrpSim
    from pool.calls import drp as drpcalls

    with DrpSim() as sim:
        user, password = next(iter(sim.users.items()))
        token_path = f"/api/v3/users/{user}/token"
        uuids = [sim.create_machine(f"m{i}")["Uuid"] for i in range(6)]
        start_worker(
            "wt",
            ["tag-wt"],
            CTXPOOL_DRP_URL=sim.url,
            CTXPOOL_DRP_USERNAME=user,
            CTXPOOL_DRP_PASSWORD=password,
        )

        def owners(want: str) -> bool:
            return all(sim.get(u)["Params"].get("docker-context/owner") == want for u in uuids)

        for uuid in uuids:
            ti.submit_drp(drpcalls.set_param(uuid, "docker-context/owner", "wt"), producer_app)
        wait_for(lambda: owners("wt"), 30, 0.1, what="6 owners written")
        fetches = [r for r in list(sim.seen) if r[1].startswith(token_path)]
        calls = [r for r in list(sim.seen) if not r[1].startswith(token_path)]
        assert len(fetches) == 1
        assert fetches[0][2].startswith("Basic ")
        assert [(m, a) for m, _, a in calls] == [("POST", f"Bearer {sim.token}")] * 6

        old, sim.token = sim.token, "rotated-token"
        tid = ti.submit_drp(
            drpcalls.set_param(uuids[0], "docker-context/owner", "again"), producer_app
        )
        wait_for(lambda: ti.result(tid, producer_app), 30, 0.1, what="call after rotation")
        result = ti.result(tid, producer_app)
        assert result is not None
        assert (result.outcome, result.status) == ("ok", 200)
        assert sim.get(uuids[0])["Params"]["docker-context/owner"] == "again"
        after = list(sim.seen)[len(fetches) + len(calls) :]
        assert [(m, a) for m, _, a in after] == [
            ("POST", f"Bearer {old}"),  # refused: 401
            ("GET", fetches[0][2]),  # exactly one renewal
            ("POST", "Bearer rotated-token"),
        ]

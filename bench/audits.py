"""Audit machinery vs. plain Celery, measured in one run on the same workers.

1. Enqueue: 10,000 targets through ``Audits.submit`` (one Lua call for the record, one
   pipelined broker batch for the messages) against a naive loop of one ``apply_async`` of
   ``tasks.audits.item`` per target (to a queue no node consumes; purged afterwards).
2. End to end: 2,000 ``noop`` items through the audit machinery (start and finish in the
   record, per-item timeout, results) until the batch is complete, against 2,000 plain Celery
   no-op tasks (``tests.noop_count``, one Redis INCR each) until all ran; same two nodes.

Needs a Redis on CTXPOOL_TEST_REDIS_URL (default redis://127.0.0.1:6379/15; it is flushed).

    python bench/audits.py [--enqueue 10000] [--items 2000]

The last line reads ``enqueue_ratio=<x> throughput_ratio=<y>`` (ratios of rates: audits over
the baseline; targets: x >= 5, y >= 0.8).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tasks.audits  # noqa: F401 - registers tasks.audits.item on every app
from pool.appconfig import create_app
from pool.audits.models import ItemPayload
from pool.audits.service import Audits
from pool.queues import AUDIT_ITEM_TASK, audit_queue
from pool.settings import Settings
from tests import support


def enqueue(audits: Audits, app: object, n: int, tag: str) -> tuple[float, float]:
    """Seconds for ``n`` targets: (ctxpool, naive loop)."""
    targets = [f"host-{i:05d}" for i in range(n)]
    task = app.tasks[AUDIT_ITEM_TASK]  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    batch = audits.submit("noop", targets, tag=tag)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, t in enumerate(targets):
        item = ItemPayload(batch=batch, index=i, target=t, check="noop", tag=tag, timeout_s=30)
        task.apply_async(kwargs={"item": item.model_dump(mode="json")})
    naive = time.perf_counter() - t0
    support.purge_queues([audit_queue(tag)])
    print(f"enqueue  {n} targets: audits {ours:.3f}s ({n / ours:.0f}/s), naive apply_async "
          f"loop {naive:.3f}s ({n / naive:.0f}/s)")  # fmt: skip
    return ours, naive


def throughput(audits: Audits, app: object, n: int, tag: str) -> tuple[float, float]:
    """Seconds until ``n`` items are done: (audit machinery, plain Celery)."""
    t0 = time.perf_counter()
    batch = audits.submit("noop", [f"host-{i:05d}" for i in range(n)], tag=tag)
    audits.wait(batch, timeout_s=600, every_s=0.05)
    ours = time.perf_counter() - t0
    key = f"bench-noop-{secrets.token_hex(4)}"
    redis = audits.runtime.store.redis
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:  # type: ignore[attr-defined]
        for _ in range(n):
            app.send_task("tests.noop_count", args=[key], queue=audit_queue(tag),  # type: ignore[attr-defined]
                          producer=producer)  # fmt: skip
    support.wait_for(lambda: int(redis.get(key) or 0) >= n, 600, 0.05, what="plain tasks")
    plain = time.perf_counter() - t0
    print(f"end2end  {n} items: audits {ours:.3f}s ({n / ours:.0f}/s), plain Celery "
          f"{plain:.3f}s ({n / plain:.0f}/s)")  # fmt: skip
    return ours, plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enqueue", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=2_000)
    args = parser.parse_args()
    os.environ.setdefault("CI", "")
    support.redis_client().flushdb()
    tag = f"bench{secrets.token_hex(2)}"
    env = {
        "CTXPOOL_BROKER_URL": support.test_broker_url(),
        "CTXPOOL_REDIS_URL": support.test_redis_url(),
        "CTXPOOL_KEY_PREFIX": f"bench-{secrets.token_hex(3)}:",
        "CTXPOOL_SEND_EVENTS": "false",
        "CTXPOOL_HEARTBEAT_S": "2",
        "CTXPOOL_SWEEP_S": "600",
        "CTXPOOL_NODE_METRICS_PORT": "0",
        "CTXPOOL_TAGS": tag,
    }
    settings = Settings(**{k.removeprefix("CTXPOOL_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    app = create_app()
    app.use_settings(settings)
    audits = Audits(app)
    ours_q, naive_q = enqueue(audits, app, args.enqueue, f"{tag}-none")
    logdir = Path(tempfile.mkdtemp(prefix="ctxpool-bench-"))
    workers = [
        support.Worker(name, [], logdir, env=env, concurrency=2, pool="prefork",
                       app="tests.extra_app")
        for name in ("bench-a", "bench-b")
    ]  # fmt: skip
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.wait_ready(60)
        ours_e, plain_e = throughput(audits, app, args.items, tag)
        print(f"workers: 2 nodes x 2 prefork processes; logs in {logdir}")
    finally:
        for w in workers:
            w.stop()
    print(f"enqueue_ratio={naive_q / ours_q:.2f} throughput_ratio={plain_e / ours_e:.3f}")


if __name__ == "__main__":
    main()

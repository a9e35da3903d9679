"""``celery -A tests.extra_app worker``: the pool app plus tasks only tests and benches use.

- ``tests.celery_http``: an HTTP GET throttled by Celery's own per-worker ``rate_limit``
  (``CTXPOOL_TEST_CELERY_RATE``, default 20/s): the baseline global limits are compared with.
- ``tests.needs_limit``: bound by the limit named in ``CTXPOOL_TEST_TASK_LIMIT`` (default
  ``http``), to show that a worker refuses to start when a task names an unknown limit.
"""

from __future__ import annotations

import os

import requests

from pool.celery import app
from pool.limits.task import LimitedTask

__all__ = ["app"]


@app.task(  # type: ignore[untyped-decorator]
    name="tests.celery_http",
    rate_limit=os.environ.get("CTXPOOL_TEST_CELERY_RATE", "20/s"),
    ignore_result=True,
)
def celery_http(url: str) -> int:
    return requests.get(url, timeout=30).status_code


@app.task(  # type: ignore[untyped-decorator]
    base=LimitedTask,
    name="tests.needs_limit",
    limit=os.environ.get("CTXPOOL_TEST_TASK_LIMIT", "http"),
    ignore_result=True,
)
def needs_limit() -> None:
    return None


@app.task(name="tests.noop_count", ignore_result=True)  # type: ignore[untyped-decorator]
def noop_count(key: str) -> None:
    """A plain Celery no-op that counts its completion (one Redis INCR): the baseline of the
    audit throughput benchmark."""
    app.runtime.store.redis.incr(key)

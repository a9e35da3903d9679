"""Observed call rate at a target under ctxpool's global limit vs. Celery's per-worker rate_limit.

Same run, same workers (2 nodes, 3 prefork processes: ``-c 2`` and ``-c 1``), same loopback
HTTP server recording arrival times, same limit:

1. ctxpool: ``--calls`` HTTP calls through ``tasks.integrations.http`` bound by
   ``http=<rate>/s burst 1``;
2. Celery: the same number of GETs through a plain task with ``rate_limit="<rate>/s"``
   (``tests.extra_app``), which Celery enforces per worker instance.

Observed rate = calls in the busiest 5-second window / 5 (mean rate and busiest 1-second
window printed too).
Needs a Redis on CTXPOOL_TEST_REDIS_URL (default redis://127.0.0.1:6379/15; it is flushed).

    python bench/ratelimit.py [--calls 600] [--rate 20]

The last line reads ``ratio=<ctxpool observed / limit> celery_ratio=<celery observed / limit>``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tasks.integrations as ti
from pool.appconfig import create_app
from pool.calls.http import HttpRequest
from pool.settings import Settings
from tests import support

WINDOW_S = 5.0


def observe(srv: support.RecordingServer, prefix: str, n: int, timeout_s: float) -> list[float]:
    def done() -> list[float] | None:
        times = [t for t, p in srv.served() if p.startswith(prefix)]
        return times if len(times) >= n else None

    times = support.wait_for(done, timeout_s, 0.1, what=f"{n} calls under {prefix}")
    return sorted(times)


def summarize(name: str, times: list[float], rate: float) -> float:
    """Print the figures of one side; return its observed rate / limit.

    The observed rate is the busiest 5-second window (a limit caps every window, and Celery's
    overshoot shows only while several workers hold work); the mean over the whole run is
    printed too.
    """
    mean = (len(times) - 1) / (times[-1] - times[0])
    observed = max(support.window_counts(times, WINDOW_S)) / WINDOW_S
    busiest = max(support.window_counts(times, 1.0))
    print(
        f"{name:8s} calls={len(times)} span={times[-1] - times[0]:.2f}s mean={mean:.2f}/s "
        f"observed(busiest {WINDOW_S:g}s)={observed:.2f}/s busiest_1s={busiest} "
        f"limit={rate:g}/s"
    )
    return observed / rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()

    os.environ.setdefault("CI", "")
    support.redis_client().flushdb()
    rate = f"{args.rate:g}/s"
    env = {
        "CTXPOOL_BROKER_URL": support.test_broker_url(),
        "CTXPOOL_REDIS_URL": support.test_redis_url(),
        "CTXPOOL_KEY_PREFIX": f"bench-{secrets.token_hex(3)}:",
        "CTXPOOL_SEND_EVENTS": "false",
        "CTXPOOL_HEARTBEAT_S": "2",
        "CTXPOOL_SWEEP_S": "600",
        "CTXPOOL_LIMITS": f"http={rate} burst 1 per {{host}}",
        "CTXPOOL_TEST_CELERY_RATE": rate,
    }
    settings = Settings(
        **{
            k.removeprefix("CTXPOOL_").lower(): v
            for k, v in env.items()
            if k != "CTXPOOL_TEST_CELERY_RATE"
        }
    )  # type: ignore[arg-type]
    app = create_app()
    app.use_settings(settings)
    logdir = Path(tempfile.mkdtemp(prefix="ctxpool-bench-"))
    workers = [
        support.Worker(
            name,
            ["tag-default"],
            logdir,
            env=env,
            concurrency=c,
            pool="prefork",
            app="tests.extra_app",
        )
        for name, c in (("bench-a", 2), ("bench-b", 1))
    ]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.wait_ready(60)
        timeout_s = args.calls / args.rate * 3 + 30
        with support.RecordingServer() as srv:
            for i in range(args.calls):
                ti.submit_http(HttpRequest(url=f"{srv.url}/ctxpool/{i}"), app=app)
            ctxpool_times = observe(srv, "/ctxpool/", args.calls, timeout_s)
            for i in range(args.calls):
                app.send_task("tests.celery_http", args=[f"{srv.url}/celery/{i}"])
            celery_times = observe(srv, "/celery/", args.calls, timeout_s)
        print(f"workers: 2 nodes, 3 processes; logs in {logdir}")
        ratio = summarize("ctxpool", ctxpool_times, args.rate)
        celery_ratio = summarize("celery", celery_times, args.rate)
        print(f"ratio={ratio:.3f} celery_ratio={celery_ratio:.3f}")
    finally:
        for w in workers:
            w.stop()


if __name__ == "__main__":
    main()

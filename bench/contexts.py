"""Contexts/s through the pool vs. a plain docker-py create+start loop, same concurrency.

Both sides create the same containers (same image, limits and security options) on the same
engine, in alternating rounds within one run, so machine noise hits both alike. The pool side
is timed from the first ``contexts.apply`` until every context reports running; it includes
Redis, Celery messaging, leases and claims.

    python bench/contexts.py [--contexts 40] [--concurrency 4] [--rounds 3]

Needs a Redis on CTXPOOL_TEST_REDIS_URL (default redis://127.0.0.1:6379/15; it is flushed)
and a Docker engine. The last line reads ``ratio=<pool/raw>``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import docker

from pool.appconfig import create_app
from pool.contexts.engine import DockerEngine
from pool.contexts.models import ContextSpec, RunState
from pool.settings import Settings
from tests import support


def remove_prefix(client: docker.DockerClient, prefix: str) -> None:
    rows = client.api.containers(all=True, filters={"name": prefix})
    with ThreadPoolExecutor(8) as ex:
        list(ex.map(lambda r: client.api.remove_container(r["Id"], force=True), rows))


def raw_round(
    client: docker.DockerClient, settings: Settings, specs: list[ContextSpec], concurrency: int
) -> float:
    """create+start with docker-py directly, same options as the pool's engine adapter."""
    engine = DockerEngine(client, settings)

    def one(spec: ContextSpec) -> None:
        engine._create(spec, 1, "bench-raw", spec.spec_hash())

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, specs))
    return len(specs) / (time.perf_counter() - start)


def pool_round(app_settings: Settings, specs: list[ContextSpec]) -> float:
    app = create_app()
    app.use_settings(app_settings)
    api = app.runtime.api
    start = time.perf_counter()
    for spec in specs:
        api.apply(spec)
    uuids = [s.uuid for s in specs]
    deadline = time.monotonic() + 300
    while True:
        statuses = api.store.statuses(uuids)
        if all(s.state is RunState.RUNNING for s in statuses):
            break
        if time.monotonic() > deadline:
            raise SystemExit("pool did not converge within 300 s")
        time.sleep(0.1)  # <= 1% of a round; faster polling steals CPU from the pool itself
    rate = len(specs) / (time.perf_counter() - start)
    for uuid in uuids:
        api.remove(uuid)
    while not all(s.state is RunState.REMOVED for s in api.store.statuses(uuids)):
        time.sleep(0.05)
    app.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    os.environ.setdefault("CI", "")  # support.need(): fail loudly only under CI
    client = support.docker_client()
    image = support.build_test_image(client)
    rconn = support.redis_client()
    rconn.flushdb()
    run = secrets.token_hex(3)
    env = {
        "CTXPOOL_BROKER_URL": support.test_broker_url(),
        "CTXPOOL_REDIS_URL": support.test_redis_url(),
        "CTXPOOL_KEY_PREFIX": f"bench-{run}:",
        "CTXPOOL_CAPACITY": str(args.contexts * 2),
        "CTXPOOL_SEND_EVENTS": "false",
        "CTXPOOL_PULL_MISSING_IMAGES": "false",
        "CTXPOOL_HEARTBEAT_S": "2",
        "CTXPOOL_SWEEP_S": "600",
    }
    settings = Settings(**{k.removeprefix("CTXPOOL_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    logdir = Path(tempfile.mkdtemp(prefix="ctxpool-bench-"))
    worker = support.Worker(
        "bench-node", ["tag-bench"], logdir, env=env, concurrency=args.concurrency
    )
    worker.start().wait_ready()

    raw_rates: list[float] = []
    pool_rates: list[float] = []
    try:
        for rnd in range(args.rounds):
            raw_ctx, pool_ctx = f"raw{run}{rnd}", f"pool{run}{rnd}"
            raw_specs = [
                ContextSpec(uuid=f"r{i:05d}", context=raw_ctx, image=image, tag="bench", token="t")
                for i in range(args.contexts)
            ]
            pool_specs = [
                ContextSpec(uuid=f"p{i:05d}", context=pool_ctx, image=image, tag="bench", token="t")
                for i in range(args.contexts)
            ]
            # alternate which side goes first, so order effects cancel out
            sides = ["raw", "pool"] if rnd % 2 == 0 else ["pool", "raw"]
            for side in sides:
                if side == "raw":
                    raw_rates.append(raw_round(client, settings, raw_specs, args.concurrency))
                    remove_prefix(client, f"drp-{raw_ctx}-")
                else:
                    pool_rates.append(pool_round(settings, pool_specs))
                    remove_prefix(client, f"drp-{pool_ctx}-")
            print(
                f"round {rnd + 1}: raw {raw_rates[-1]:.2f} contexts/s, "
                f"pool {pool_rates[-1]:.2f} contexts/s",
                flush=True,
            )
    finally:
        worker.stop()
        remove_prefix(client, "drp-raw" + run)
        remove_prefix(client, "drp-pool" + run)

    raw = statistics.median(raw_rates)
    pooled = statistics.median(pool_rates)
    print(f"contexts={args.contexts} concurrency={args.concurrency} rounds={args.rounds}")
    print(f"raw_docker_py={raw:.2f}/s pool={pooled:.2f}/s (medians)")
    print(f"ratio={pooled / raw:.3f}")


if __name__ == "__main__":
    main()

"""Fixtures. Integration tests use a real Redis, the real Docker engine and real workers."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pool.appconfig import CtxpoolCelery, create_app
from pool.contexts.api import ContextAPI
from pool.contexts.store import StateStore
from pool.settings import Settings
from tests import support


@pytest.fixture
def redis_conn() -> Iterator[redis.Redis]:
    """A real Redis database, emptied before the test."""
    client = support.redis_client()
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_engine() -> docker.DockerClient:
    return support.docker_client()


@pytest.fixture(scope="session")
def test_image(docker_engine: docker.DockerClient) -> str:
    return support.build_test_image(docker_engine)


@pytest.fixture
def run_id() -> str:
    return "t" + secrets.token_hex(3)


@pytest.fixture
def pool_env(
    redis_conn: redis.Redis, run_id: str, test_image: str, tmp_path: Path
) -> dict[str, str]:
    """Environment of every node in a test: fast heartbeats and sweeps, own key prefix."""
    return {
        "CTXPOOL_BROKER_URL": support.test_broker_url(),
        "CTXPOOL_REDIS_URL": support.test_redis_url(),
        "CTXPOOL_KEY_PREFIX": f"ctxpool-{run_id}:",
        "CTXPOOL_HEARTBEAT_S": "0.5",
        "CTXPOOL_HEARTBEAT_TTL_S": "2",
        "CTXPOOL_CAPACITY_CHECK_S": "0.3",
        "CTXPOOL_SWEEP_S": "3",
        "CTXPOOL_LOCK_TTL_S": "30",
        "CTXPOOL_ALLOWED_IMAGES": "ctxpool-test/*",
        "CTXPOOL_PULL_MISSING_IMAGES": "false",
        "CTXPOOL_SEND_EVENTS": "false",
        "CTXPOOL_NODE_METRICS_PORT": "0",
        "CTXPOOL_STATE_DIR": str(tmp_path / "state"),
        # the test image sleeps like an agent; tests of drpcli injection turn this on
        "CTXPOOL_AGENT_INJECT": "false",
    }


def _settings_from(env: dict[str, str]) -> Settings:
    fields = {k.removeprefix("CTXPOOL_").lower(): v for k, v in env.items()}
    return Settings(**fields)  # type: ignore[arg-type]


@pytest.fixture
def producer_app(pool_env: dict[str, str]) -> Iterator[CtxpoolCelery]:
    """A producer-side app (the bridge's view) with the test's settings."""
    app = create_app()
    app.use_settings(_settings_from(pool_env))
    yield app
    app.close()


@pytest.fixture
def store(pool_env: dict[str, str]) -> StateStore:
    return StateStore.from_url(support.test_redis_url(), pool_env["CTXPOOL_KEY_PREFIX"])


@pytest.fixture
def api(producer_app: CtxpoolCelery) -> ContextAPI:
    return producer_app.runtime.api


@pytest.fixture
def start_worker(
    pool_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest, ctx_name: str
) -> Iterator[Callable[..., support.Worker]]:
    """Factory: ``start_worker("n1", ["tag-ci"], CTXPOOL_CAPACITY="3")`` -> a ready node.

    Depends on ``ctx_name`` so that workers stop before the test's containers are removed
    (a running node would recreate them).
    """
    started: list[support.Worker] = []

    def start(
        node: str,
        queues: list[str],
        wait: bool = True,
        pool: str = "threads",
        concurrency: int = 4,
        app: str = "pool",
        **env: str,
    ) -> support.Worker:
        worker = support.Worker(
            node,
            queues,
            tmp_path,
            env={**pool_env, **env},
            concurrency=concurrency,
            pool=pool,
            app=app,
        ).start()
        started.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for worker in started:
            print(f"\n===== log of worker {worker.node} =====\n{worker.log()[-6000:]}")


@pytest.fixture
def ctx_name(run_id: str, docker_engine: docker.DockerClient) -> Iterator[str]:
    """A context name unique to the test; its containers are removed afterwards."""
    name = f"ctx{run_id}"
    yield name
    for row in docker_engine.api.containers(all=True, filters={"name": f"drp-{name}-"}):
        docker_engine.api.remove_container(row["Id"], force=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)

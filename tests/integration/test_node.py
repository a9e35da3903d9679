"""A real node: queues and membership, container lifecycle, hostile messages."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid as uuidlib
from collections.abc import Callable

import docker
import pytest
from kombu import Connection, Exchange, Queue

from pool.contexts.api import ContextAPI
from pool.contexts.models import ContextSpec, Resources, RunState
from pool.contexts.store import StateStore
from tests import support
from tests.support import Worker, wait_for

pytestmark = pytest.mark.integration


def _spec(ctx: str, uuid: str, image: str, tag: str = "ci", **kw: object) -> ContextSpec:
    return ContextSpec(
        uuid=uuid,
        context=ctx,
        image=image,
        tag=tag,
        token="tok-" + uuid,
        endpoints=["https://drp-a:8092", "https://drp-b:8092"],
        **kw,  # type: ignore[arg-type]
    )


def _running(store: StateStore, uuid: str, generation: int) -> Callable[[], bool]:
    def probe() -> bool:
        st = store.status(uuid)
        return st.state is RunState.RUNNING and st.applied_generation == generation

    return probe


def test_node_registers_queues_and_membership(
    start_worker: Callable[..., Worker], store: StateStore, pool_env: dict[str, str]
) -> None:
    start_worker("node-a1", ["tag-ci"])
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "pool", "inspect", "active_queues", "-t", "5"],
        env={**os.environ, **pool_env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "'name': 'tag-ci'" in out
    assert "'name': 'node-node-a1'" in out
    record = wait_for(lambda: store.members.membership("node-a1"), what="membership record")
    assert record.tags == ["ci"]
    assert "'name': 'audit-ci'" in out  # audit items for its tag (never gated)
    assert sorted(record.queues) == ["audit-ci", "node-node-a1", "tag-ci"]
    assert record.worker_id.startswith("node-a1@")
    assert record.stats.capacity == 20
    assert record.annotations.engine == "docker-context"
    assert record.annotations.docker_version not in ("", "unreachable")
    views = {v.name: v for v in store.members.nodes()}
    assert views["node-a1"].alive


def test_lifecycle_apply_update_remove_is_idempotent(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
) -> None:
    start_worker("node-l1", ["tag-ci"])
    uuid = str(uuidlib.uuid4())
    name = f"drp-{ctx_name}-{uuid}"
    spec = _spec(
        ctx_name,
        uuid,
        test_image,
        resources=Resources(memory_mb=64, cpus=0.5, pids=100),
        env={"EXTRA": "1"},
    )

    first = api.apply(spec)
    wait_for(_running(store, uuid, first.generation), what="container running")
    c = docker_engine.containers.get(name)
    assert c.status == "running"
    assert c.labels["ctxpool.uuid"] == uuid
    assert c.labels["ctxpool.owner"] == "node-l1"
    assert c.labels["ctxpool.generation"] == str(first.generation)
    assert c.labels["ctxpool.spec-hash"] == spec.spec_hash()
    env = dict(item.split("=", 1) for item in c.attrs["Config"]["Env"])
    assert env["RS_UUID"] == uuid
    assert env["RS_TOKEN"] == "tok-" + uuid
    assert env["RS_CONTEXT"] == ctx_name
    assert env["RS_ENDPOINTS"] == "https://drp-a:8092 https://drp-b:8092"
    assert env["RS_ENDPOINT"] == "https://drp-a:8092"
    assert env["EXTRA"] == "1"
    host = c.attrs["HostConfig"]
    assert host["Memory"] == 64 * 1024 * 1024
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 100
    assert host["CapDrop"] == ["ALL"]
    assert host["Privileged"] is False
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    first_id = c.id

    # the same spec again: same generation, same container, nothing replaced
    again = api.apply(spec)
    assert (again.generation, again.changed) == (first.generation, False)
    wait_for(lambda: store.status(uuid).updated_at, what="status")
    assert docker_engine.containers.get(name).id == first_id

    # a spec change replaces the container
    changed = spec.model_copy(update={"env": {"EXTRA": "2"}})
    second = api.apply(changed)
    assert second.generation == first.generation + 1
    wait_for(_running(store, uuid, second.generation), what="replacement")
    c2 = docker_engine.containers.get(name)
    assert c2.id != first_id
    assert c2.labels["ctxpool.spec-hash"] == changed.spec_hash()
    assert "EXTRA=2" in c2.attrs["Config"]["Env"]
    assert len(support.container_state(docker_engine, f"drp-{ctx_name}-")) == 1

    # removal, twice
    gone = api.remove(uuid)
    wait_for(lambda: store.status(uuid).state is RunState.REMOVED, what="removal")
    assert support.container_state(docker_engine, f"drp-{ctx_name}-") == {}
    again_gone = api.remove(uuid)
    assert (again_gone.generation, again_gone.changed) == (gone.generation, False)
    assert store.ownership.owner(uuid) is None
    assert store.ownership.count_owned("node-l1") == 0


def test_pickled_message_is_rejected_and_node_keeps_working(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    ctx_name: str,
    test_image: str,
) -> None:
    worker = start_worker("node-p1", ["tag-ci"])
    queue = Queue("tag-ci", Exchange("tag-ci", type="direct"), routing_key="tag-ci")
    with Connection(support.test_broker_url()) as conn:
        conn.Producer().publish(
            ((), {"nudge": {"uuid": "evil"}}, {}),
            serializer="pickle",
            exchange=queue.exchange,
            routing_key="tag-ci",
            declare=[queue],
            headers={"task": "tasks.contexts.reconcile", "id": str(uuidlib.uuid4()), "lang": "py"},
        )
    wait_for(lambda: "untrusted content of type pickle" in worker.log(), what="rejection logged")
    uuid = str(uuidlib.uuid4())
    result = api.apply(_spec(ctx_name, uuid, test_image))
    wait_for(_running(store, uuid, result.generation), what="node still working")
    assert worker.alive()


def test_image_outside_allowlist_is_a_recorded_permanent_error(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    docker_engine: docker.DockerClient,
    ctx_name: str,
) -> None:
    worker = start_worker("node-e1", ["tag-ci"])
    uuid = str(uuidlib.uuid4())
    result = api.apply(_spec(ctx_name, uuid, "evil/miner:latest"))
    status = wait_for(
        lambda: (s := store.status(uuid)).state is RunState.FAILED and s, what="error recorded"
    )
    assert "not allowed" in (status.last_error or "")
    assert status.error_generation == result.generation
    assert support.container_state(docker_engine, f"drp-{ctx_name}-") == {}
    # an absent image that cannot be pulled is permanent too
    uuid2 = str(uuidlib.uuid4())
    api.apply(_spec(ctx_name, uuid2, "ctxpool-test/absent:1"))
    status2 = wait_for(
        lambda: (s := store.status(uuid2)).state is RunState.FAILED and s, what="error recorded"
    )
    assert "absent:1" in (status2.last_error or "")
    # no retry storm: one attempt per nudge/sweep, not a loop
    assert worker.log().count(f"context {uuid}: generation") <= 3


def test_policy_error_is_parked_without_capacity_until_the_spec_changes(
    start_worker: Callable[..., Worker],
    api: ContextAPI,
    store: StateStore,
    ctx_name: str,
    test_image: str,
) -> None:
    """Fault 3 of issue 8: a capability outside the allowlist after a fresh claim."""
    error_path_of = "/api/v3/machines/{}/params/docker-context%2Ferror".format
    with support.RecordingServer() as drp:
        worker = start_worker(
            "node-p1", ["tag-ci"], CTXPOOL_CAPACITY="1", CTXPOOL_DRP_URL=drp.url,
            CTXPOOL_DRP_TOKEN="drp-secret",
        )  # fmt: skip

        def drp_calls(method: str, path: str) -> list[str]:
            return [body for m, p, body, _ in list(drp.requests) if (m, p) == (method, path)]

        bad = str(uuidlib.uuid4())
        spec = _spec(ctx_name, bad, test_image, cap_add=["SYS_ADMIN"])
        first = api.apply(spec)
        status = wait_for(
            lambda: (s := store.status(bad)).state is RunState.FAILED and s, what="failure"
        )
        assert "capabilities not allowed: SYS_ADMIN" in (status.last_error or "")
        assert status.error_generation == first.generation
        assert store.ownership.owner(bad) == "node-p1"  # still its owner: nudges reach it
        assert store.ownership.count_owned("node-p1") == 0  # ... but it holds no capacity
        wait_for(lambda: drp_calls("POST", error_path_of(bad)), 30, what="error in DRP")
        assert "SYS_ADMIN" in drp_calls("POST", error_path_of(bad))[0]

        # the node's only slot is free: a good context runs there
        good = str(uuidlib.uuid4())
        applied = api.apply(_spec(ctx_name, good, test_image))
        wait_for(_running(store, good, applied.generation), what="good context running")

        # not retried: two sweep periods (CTXPOOL_SWEEP_S=3) later, still the one attempt
        time.sleep(7)
        assert worker.log().count(f"context {bad}: generation") == 1
        assert store.status(bad).state is RunState.FAILED

        # a spec change is tried again (and counts against capacity once it runs)
        api.remove(good)
        wait_for(lambda: store.ownership.count_owned("node-p1") == 0, what="slot freed")
        fixed = api.apply(spec.model_copy(update={"cap_add": ["CHOWN"]}))
        wait_for(_running(store, bad, fixed.generation), what="fixed spec running")
        assert store.ownership.count_owned("node-p1") == 1
        wait_for(lambda: drp_calls("DELETE", error_path_of(bad)), 30, what="error cleared")

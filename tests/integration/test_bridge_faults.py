"""Faults of issue 8 end to end: the DRP simulator's real websocket and REST API, the bridge as
``ctxpool bridge`` runs it, real Redis, real worker nodes and the Docker engine.

- fault 7: junk frames, objects of the wrong shape or type and a frame over the size limit are
  logged once, counted, and the other machines converge as usual;
- fault 1: ``/healthz`` turns 503 while resyncs fail and ``/metrics`` shows the resync loop's
  restarts and the age of its last success; both recover with DRP;
- fault 6 (the bridge's part): a completed resync is recorded in the store, and after Redis
  lost its data a resync writes every context again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import docker
import pytest
import redis

from broker_bridge.drpsim import DrpSim
from pool.contexts.models import Desired
from pool.contexts.store import StateStore
from tests import support
from tests.integration.conftest import free_port, http_get, metric
from tests.support import Worker, wait_for

pytestmark = pytest.mark.integration

TAG = "docker-context/tag"
#: Over the client's frame limit (64 MiB): the connection cannot carry it.
HUGE = 64 * 1024 * 1024 + 1


def _running(client: docker.DockerClient, ctx: str) -> set[str]:
    return {
        attrs["Config"]["Labels"]["ctxpool.uuid"]
        for attrs in support.container_state(client, f"drp-{ctx}-").values()
        if attrs["State"]["Running"]
    }


def _junk_frames(ctx: str, bad_tag_uuid: str) -> list[str]:
    """One of each kind of bad frame; every one is malformed (none is merely unrelated)."""

    def ev(kind: str, action: str, key: str, obj: Any) -> str:
        return json.dumps({"Time": "t", "Type": kind, "Action": action, "Key": key,
                           "Object": obj, "Original": None})  # fmt: skip

    return [
        "not json {",
        "[1, 2, 3]",
        '{"Type": "machines"}',
        ev("machines", "explode", "x-1", {}),
        ev("machines", "update", "x-2", "not an object"),
        ev("machines", "save", "x-3", {"Uuid": "x-3", "Context": {"Name": ctx}, "Params": {}}),
        ev("machines", "save", bad_tag_uuid,
           {"Uuid": bad_tag_uuid, "Context": ctx, "Params": {TAG: {"nested": ["ci"]}}}),
        ev("contexts", "save", ctx, {"Name": ctx, "Engine": 5, "Image": ["x"]}),
    ]  # fmt: skip


def test_bad_input_from_drp_is_logged_once_counted_and_skipped(
    sim: DrpSim,
    drp_env: dict[str, str],
    run_bridge: Callable[..., None],
    start_worker: Callable[..., Worker],
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="broker_bridge")
    start_worker("j-1", ["tag-ci"], **drp_env)
    sim.put_context(ctx_name, engine="docker-context", image=test_image)
    listing_junk: list[Any] = [
        "not an object",
        42,
        [1, 2],
        {"Uuid": 7, "Params": {}},
        {"Uuid": "00000000-0000-4000-8000-0000000000b1", "Name": "bad-context",
         "Context": {"Name": ctx_name}, "Params": {}},
        {"Uuid": "00000000-0000-4000-8000-0000000000b2", "Name": "bad-tag",
         "Context": ctx_name, "Params": {TAG: ["ci"]}},
    ]  # fmt: skip
    sim.list_raw("machines", *listing_junk)
    # before the bridge starts: only a resync (which lists the junk first) can bring these
    before = {sim.create_machine(f"pre{i}", ctx_name, {TAG: "ci"})["Uuid"] for i in range(3)}
    port = free_port()
    run_bridge(resync_s=60, bridge_metrics_port=port)
    wait_for(lambda: _running(docker_engine, ctx_name) == before, 60, 0.5, what="listed up")

    bad_tag = sim.create_machine("bad-tag-event", ctx_name, {TAG: "ci"})["Uuid"]
    wait_for(lambda: _running(docker_engine, ctx_name) == before | {bad_tag}, 60, 0.5)
    frames = _junk_frames(ctx_name, bad_tag)
    for text in frames + frames:  # each twice: counted twice, logged once
        sim.emit_raw(text)
    sim.emit_raw("x" * HUGE)  # the connection cannot carry it: reconnect, resync
    after = {sim.create_machine(f"post{i}", ctx_name, {TAG: "ci"})["Uuid"] for i in range(3)}
    want = before | after | {bad_tag}  # a bad update leaves the context as it was
    wait_for(lambda: _running(docker_engine, ctx_name) == want, 60, 0.5, what="the rest up")

    def malformed() -> float:
        status, body = http_get(port, "/metrics")
        assert status == 200
        return metric(body, "ctxpool_bridge_malformed_total") or 0.0

    # every bad frame twice, the huge one, and the listing's junk in at least one resync
    least = 2 * len(frames) + 1 + len(listing_junk)
    wait_for(lambda: malformed() >= least, 30, 0.5, what=f"{least} malformed counted")
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("broker_bridge")]
    assert sum("not JSON" in m for m in messages) == 1
    assert sum("x-3" in m for m in messages) == 1
    too_large = [m for m in messages if "too large" in m]
    assert len(too_large) == 1
    assert "x" * 100 not in too_large[0]  # the frame is not logged
    assert all(len(m) < 2000 for m in messages)


def test_healthz_turns_503_while_resyncs_fail_and_recovers(
    sim: DrpSim,
    run_bridge: Callable[..., None],
    redis_conn: redis.Redis,
) -> None:
    port = free_port()
    resync_s = 1.0
    run_bridge(resync_s=resync_s, bridge_metrics_port=port)
    resync = 'component="bridge",loop="resync"'
    wait_for(lambda: http_get(port, "/healthz")[0] == 200, 30, 0.2, what="healthy")

    def first_resync_done() -> bool:
        loops = json.loads(http_get(port, "/healthz")[1])["loops"]
        return loops.get("resync", {}).get("last_ok_age_s") is not None

    wait_for(first_resync_done, 30, 0.2, what="a first successful resync")
    sim.fail_auth = True  # DRP refuses the bridge: every resync fails from now on
    sim.cut_websockets()
    _, body = wait_for(
        lambda: (r := http_get(port, "/healthz"))[0] == 503 and r, 30, 0.2, what="503"
    )
    report = json.loads(body)
    assert not report["healthy"]
    assert any("resync" in p for p in report["problems"])
    _, page = http_get(port, "/metrics")
    assert (metric(page, f"ctxpool_loop_restarts_total{{{resync}}}") or 0) >= 1
    assert (metric(page, f"ctxpool_loop_last_ok_age_seconds{{{resync}}}") or 0) > 2 * resync_s
    assert metric(page, f"ctxpool_loop_up{{{resync}}}") == 0

    sim.fail_auth = False
    wait_for(lambda: http_get(port, "/healthz")[0] == 200, 60, 0.2, what="healthy again")
    _, page = http_get(port, "/metrics")
    assert (metric(page, f"ctxpool_loop_last_ok_age_seconds{{{resync}}}") or 99) < 2 * resync_s


def test_a_resync_is_recorded_and_rewrites_a_store_that_lost_its_data(
    sim: DrpSim,
    run_bridge: Callable[..., None],
    redis_conn: redis.Redis,
    store: StateStore,
    ctx_name: str,
) -> None:
    sim.put_context(ctx_name, engine="docker-context", image="ctxpool-test/busybox:latest")
    uuids = {sim.create_machine(f"m{i}", ctx_name, {TAG: "ci"})["Uuid"] for i in range(8)}
    started = time.time()
    run_bridge(resync_s=60)

    def all_present() -> bool:
        states = [store.get_desired(u) for u in uuids]
        return all(s is not None and s.desired is Desired.PRESENT for s in states)

    wait_for(lambda: all_present() and store.last_resync(), 30, 0.2, what="first resync")
    first = store.last_resync()
    assert first is not None
    assert started - 1 <= first <= time.time()

    redis_conn.flushdb()  # Redis restarted without its data
    assert store.last_resync() is None
    sim.cut_websockets()  # the bridge reconnects and resyncs (the store does not tell it)
    wait_for(lambda: all_present() and store.last_resync(), 30, 0.2, what="rewritten")
    again = store.last_resync()
    assert again is not None
    assert again > first
    support.purge_queues(["tag-ci"])

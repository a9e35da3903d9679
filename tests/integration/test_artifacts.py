"""drpcli and context images from DRP, end to end: real Docker engine, real Redis, real workers.

Issue 9, must-show 1: a plain busybox image (no agent inside) runs DRP's agent: the node
bind-mounts the drpcli it fetched from DRP's file space (the simulator's stand-in), and every
machine's container writes a param to its own machine with its machine token.

Issue 9, must-show 2: a context image that exists only as a ``docker save`` archive in DRP's
file space runs on two nodes sharing one engine; 20 machines created at once cost exactly one
download per node. A wrong ``Meta.Checksum`` is a clear permanent error in DRP and in
``ctxpool contexts``, and starts no container.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import redis

from broker_bridge.drpsim import DrpSim
from pool.contexts.images import DrpImages, ImageRecord, ImageRecords
from pool.contexts.models import ContextSpec, RunState
from pool.contexts.store import StateStore
from pool.drp.config import DrpConfig
from pool.drp.files import DrpFiles
from pool.drp.sync import TokenSource
from pool.errors import ImageUnavailableError
from pool.keys import Keys
from pool.settings import Settings
from tests import support
from tests.fileserver import FileServer
from tests.support import Worker, wait_for

pytestmark = pytest.mark.integration

TAG = "docker-context/tag"
ERROR = "docker-context/error"
#: The Context's Image: a versioned name, unlike the archive's own tag.
IMAGE = "ctxpool-test/runner_v1.2.0"


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    """The simulator on every address, so that containers reach it over the bridge."""
    with DrpSim(host="0.0.0.0") as s:  # noqa: S104
        yield s


@pytest.fixture
def archived_image(
    docker_engine: docker.DockerClient, run_id: str, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """A busybox image of its own, saved to an archive and removed from the engine: it
    exists only as ``(its tag, the archive)``. Whatever loads it is removed afterwards."""
    tag = f"ctxpool-test/archived:{run_id}"
    image_id = support.build_archived_image(docker_engine, tag)
    archive = support.save_image_archive(docker_engine, tag, tmp_path / "archived.tar")
    docker_engine.images.remove(tag)
    with pytest.raises(docker.errors.ImageNotFound):
        docker_engine.images.get(image_id)
    yield tag, archive
    for row in docker_engine.api.containers(all=True, filters={"ancestor": image_id}):
        docker_engine.api.remove_container(row["Id"], force=True)
    with contextlib.suppress(docker.errors.ImageNotFound):
        docker_engine.images.remove(image_id, force=True)


def _param(sim: DrpSim, uuid: str, key: str) -> Any:
    return ((sim.get(uuid) or {}).get("Params") or {}).get(key)


def _running(client: docker.DockerClient, ctx: str) -> dict[str, dict[str, Any]]:
    return {
        attrs["Config"]["Labels"]["ctxpool.uuid"]: attrs
        for attrs in support.container_state(client, f"drp-{ctx}-").values()
        if attrs["State"]["Running"]
    }


def _put_context(sim: DrpSim, name: str, image: str, **meta: str) -> None:
    obj = {"Name": name, "Engine": "docker-context", "Image": image, "Meta": meta}
    sim.call(sim.store_context(obj))


# ---- the image source on the real engine, behind a plain file server ---------------------------


def test_an_archive_is_loaded_from_a_file_once_per_node(
    docker_engine: docker.DockerClient,
    redis_conn: redis.Redis,
    archived_image: tuple[str, Path],
    run_id: str,
    tmp_path: Path,
) -> None:
    tag, archive = archived_image
    with FileServer() as server:
        server.tokens.add("tok")
        sha = server.put(f"docker-contexts/{IMAGE}", archive.read_bytes())
        settings = Settings(state_dir=tmp_path / "state", pull_missing_images=False)
        files = DrpFiles(TokenSource(DrpConfig(url=server.url, token="tok")))
        keys = Keys(f"ctxpool-{run_id}:")

        def source(node: str) -> DrpImages:
            records = ImageRecords(redis_conn, keys, node)
            return DrpImages(docker_engine, settings, files, records, node)

        spec = ContextSpec(uuid="m1", context="c", image=IMAGE, image_checksum=sha)
        started = time.monotonic()
        first = source("a").resolve(spec)
        load_s = time.monotonic() - started
        loaded = docker_engine.images.get(first.ref)
        assert tag in loaded.tags  # the archive's own tag, not the Context's Image
        assert source("a").resolve(spec) == first
        assert source("b").resolve(spec) == first  # another node: its own download
        gets = [path for method, path, _ in server.seen if method == "GET"]
        assert gets == [f"/api/v3/files/docker-contexts/{IMAGE}"] * 2
        record = ImageRecord.model_validate_json(redis_conn.hget(keys.node_images("b"), IMAGE))
        assert (record.sha256, record.image_id, record.tags) == (sha, first.image_id, [tag])
        assert not list((settings.cache_dir / "images").glob("*.tar"))  # archives deleted

        with pytest.raises(ImageUnavailableError, match="checksum mismatch"):
            source("c").resolve(spec.model_copy(update={"image_checksum": "0" * 64}))
        assert len([m for m, _, _ in server.seen if m == "GET"]) == 2  # HEAD caught it
    print(f"\narchive {archive.stat().st_size / 1e6:.1f} MB: download + load {load_s:.2f}s")


# ---- must-show 1: drpcli from DRP injected into a plain busybox image --------------------------


def test_drpcli_from_drp_runs_in_plain_busybox_containers(
    sim: DrpSim,
    drp_env: dict[str, str],
    run_bridge: Callable[..., None],
    start_worker: Callable[..., Worker],
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
    tmp_path: Path,
) -> None:
    from broker_bridge.drpsim import AGENT_PARAM, AGENT_SCRIPT

    gateway = docker_engine.networks.get("bridge").attrs["IPAM"]["Config"][0]["Gateway"]
    arch = docker_engine.version()["Arch"]
    env = {"CTXPOOL_AGENT_INJECT": "true", "CTXPOOL_CAPACITY": "2", **drp_env}
    start_worker("a-1", ["tag-ci"], **env)
    start_worker("a-2", ["tag-ci"], **env)
    sim.put_context(ctx_name, engine="docker-context", image=test_image)
    run_bridge(resync_s=60, drp_endpoints=[sim.url_for(gateway)])
    machines = [sim.create_machine(f"m{i}", ctx_name, {TAG: "ci"})["Uuid"] for i in range(4)]

    for uuid in machines:
        wait_for(lambda u=uuid: _param(sim, u, AGENT_PARAM), 120, 0.5, what=f"agent of {uuid}")
    running = _running(docker_engine, ctx_name)
    assert set(running) == set(machines)
    want_sha = hashlib.sha256(AGENT_SCRIPT.encode()).hexdigest()
    owners = set()
    for uuid in machines:
        attrs = running[uuid]
        owners.add(attrs["Config"]["Labels"]["ctxpool.owner"])
        # written from inside this machine's own container (its hostname)
        assert _param(sim, uuid, AGENT_PARAM).split()[0] == attrs["Config"]["Hostname"]
        assert attrs["Config"]["Image"] == test_image
        assert attrs["Config"]["Entrypoint"] == ["/usr/bin/drpcli"]
        assert attrs["Config"]["Cmd"] == ["machines", "processjobs"]
        agent = next(m for m in attrs["Mounts"] if m["Destination"] == "/usr/bin/drpcli")
        assert agent["Source"] == str(tmp_path / "state" / "cache" / "agent" / want_sha / "drpcli")
        assert agent["RW"] is False
    assert owners == {"a-1", "a-2"}
    # two nodes of one host: one download of the binary (content-addressed, shared cache)
    assert sim.download_count(f"drpcli.{arch}.linux") == 1
    # the image brings no agent of its own
    probe = ["sh", "-c", "test -e /usr/bin/drpcli; echo $?"]
    assert docker_engine.containers.run(test_image, probe, remove=True) == b"1\n"


# ---- must-show 2: an image that exists only as an archive in DRP's file space ------------------


def test_an_archive_only_image_runs_on_two_nodes_with_one_download_each(
    archived_image: tuple[str, Path],  # first: torn down after the workers and containers
    sim: DrpSim,
    drp_env: dict[str, str],
    pool_env: dict[str, str],
    run_bridge: Callable[..., None],
    start_worker: Callable[..., Worker],
    docker_engine: docker.DockerClient,
    redis_conn: redis.Redis,
    store: StateStore,
    ctx_name: str,
) -> None:
    tag, archive = archived_image
    path = f"docker-contexts/{IMAGE}"
    sha = sim.put_file(path, archive)
    env = {"CTXPOOL_CAPACITY": "10", **drp_env}
    start_worker("b-1", ["tag-ci"], **env)
    start_worker("b-2", ["tag-ci"], **env)
    bad_ctx = f"{ctx_name}-bad"
    _put_context(sim, bad_ctx, IMAGE, Checksum="0" * 64)
    _put_context(sim, ctx_name, IMAGE, Checksum=sha)
    run_bridge(resync_s=60)

    # a wrong Meta.Checksum: a clear permanent error in DRP and in `ctxpool contexts`
    bad = sim.create_machine("bad", bad_ctx, {TAG: "ci"})["Uuid"]
    wait_for(lambda: _param(sim, bad, ERROR), 60, 0.3, what="error in DRP")
    error = _param(sim, bad, ERROR)
    assert "checksum mismatch" in error, error
    assert "0" * 64 in error
    assert sha in error
    assert path in error
    assert store.status(bad).state is RunState.FAILED
    cli = subprocess.run(
        [sys.executable, "-m", "pool.cli", "contexts", "--json"],
        env={**pool_env, "PATH": "/usr/bin:/bin"},
        cwd=support.REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    shown = {row["uuid"]: row for row in json.loads(cli.stdout)}
    assert "checksum mismatch" in shown[bad]["last_error"]
    assert not support.container_state(docker_engine, f"drp-{bad_ctx}-")
    assert sim.download_count(path) == 0  # HEAD's checksum already disagreed

    # 20 machines at once: each node downloads the archive once
    started = time.monotonic()
    machines = [sim.create_machine(f"m{i}", ctx_name, {TAG: "ci"})["Uuid"] for i in range(20)]
    wait_for(lambda: len(_running(docker_engine, ctx_name)) == 20, 180, 0.5, what="20 running")
    elapsed_s = time.monotonic() - started
    running = _running(docker_engine, ctx_name)
    assert set(running) == set(machines)
    owners = {attrs["Config"]["Labels"]["ctxpool.owner"] for attrs in running.values()}
    assert owners == {"b-1", "b-2"}
    assert sim.download_count(path) == 2
    keys = Keys(pool_env["CTXPOOL_KEY_PREFIX"])
    image_ids = set()
    for node in ("b-1", "b-2"):
        record = ImageRecord.model_validate_json(redis_conn.hget(keys.node_images(node), IMAGE))
        assert record.sha256 == sha
        assert record.tags == [tag]  # the archive's own tag, not the Context's Image
        image_ids.add(record.image_id)
    assert {attrs["Image"] for attrs in running.values()} == image_ids
    print(
        f"\n20 contexts from a {archive.stat().st_size / 1e6:.1f} MB archive on 2 nodes: "
        f"{sim.download_count(path)} downloads, all running after {elapsed_s:.1f}s"
    )

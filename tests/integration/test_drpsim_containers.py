"""The DRP simulator with real containers: the stand-in ``drpcli`` as a context container's
entrypoint reaches the simulator over the Docker bridge, and an image kept only as an archive
goes through the simulator's file space and loads back as the same image."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests

from broker_bridge.drpsim import AGENT_FILES, AGENT_PARAM, SHA_HEADER, DrpSim
from tests.support import build_archived_image, save_image_archive, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.no_broker]


@pytest.fixture
def created(docker_engine: docker.DockerClient) -> Iterator[list[str]]:
    """Ids of containers and images the test created; all removed afterwards."""
    ids: list[str] = []
    yield ids
    for ident in ids:
        try:
            docker_engine.api.remove_container(ident, force=True)
        except docker.errors.NotFound:  # not a container: an image
            with contextlib.suppress(docker.errors.ImageNotFound):
                docker_engine.images.remove(ident, force=True)


def _bridge_gateway(client: docker.DockerClient) -> str:
    """The host's address on Docker's default bridge (containers reach the host there)."""
    config = client.networks.get("bridge").attrs["IPAM"]["Config"]
    return str(config[0].get("Gateway") or "172.17.0.1")


@pytest.fixture
def gateway_sim(docker_engine: docker.DockerClient) -> Iterator[DrpSim]:
    """A simulator listening on the bridge gateway's address only (not on every address)."""
    with DrpSim(seed=6, host=_bridge_gateway(docker_engine)) as sim:
        yield sim


def test_the_stand_in_drpcli_posts_from_a_context_container(
    gateway_sim: DrpSim,
    docker_engine: docker.DockerClient,
    test_image: str,
    created: list[str],
    run_id: str,
    tmp_path: Path,
) -> None:
    sim = gateway_sim
    gateway = _bridge_gateway(docker_engine)
    machine = sim.create_machine(f"m-{run_id}", "runner")
    uuid = machine["Uuid"]
    bearer = {"Authorization": f"Bearer {sim.token}"}
    token = requests.get(
        f"{sim.url}/api/v3/machines/{uuid}/token?ttl=600", headers=bearer, timeout=30
    )
    # Fetch drpcli from the file space, as a node does.
    drpcli = tmp_path / "drpcli"
    drpcli.write_bytes(
        requests.get(f"{sim.url}/api/v3/files/{AGENT_FILES[0]}", headers=bearer, timeout=30).content
    )
    drpcli.chmod(0o755)
    name = f"drpsim-agent-{run_id}"
    container = docker_engine.containers.create(
        test_image,
        name=name,
        entrypoint=["/usr/bin/drpcli", "machines", "processjobs"],
        environment={
            "RS_UUID": uuid,
            "RS_TOKEN": token.json()["Token"],
            "RS_ENDPOINTS": f"{sim.url_for(gateway)} https://drp.invalid:8092",
            "RS_ENDPOINT": sim.url_for(gateway),
            "RS_CONTEXT": "runner",
            "DRPCLI_SIM_INTERVAL_S": "1",
            "PATH": "/bin:/usr/bin:/usr/local/bin:/sbin:/usr/sbin:/usr/local/sbin",
        },
        volumes={str(drpcli): {"bind": "/usr/bin/drpcli", "mode": "ro"}},
    )
    created.append(container.id)
    container.start()

    def posted() -> str:
        value = (sim.get(uuid) or {}).get("Params", {}).get(AGENT_PARAM)
        return value if isinstance(value, str) else ""

    try:
        value = wait_for(posted, 30, what="the agent's param from the container")
    except AssertionError:
        raise AssertionError(container.logs().decode(errors="replace")) from None
    host, _ = value.split(" ")
    assert host == container.attrs["Config"]["Hostname"]  # it came from that container
    container.reload()
    assert container.status == "running"
    container.stop(timeout=10)
    assert container.wait(timeout=15)["StatusCode"] == 0  # SIGTERM: a clean exit


def test_an_archived_image_round_trips_through_the_file_space(
    docker_engine: docker.DockerClient,
    test_image: str,
    created: list[str],
    run_id: str,
    tmp_path: Path,
) -> None:
    tag = f"ctxpool-test/archived-{run_id}:1"
    image_id = build_archived_image(docker_engine, tag)
    created.append(image_id)
    base = (
        docker_engine.images.get("ctxpool-test/busybox:latest")
        if _has(docker_engine, "ctxpool-test/busybox:latest")
        else None
    )
    assert base is None or base.id != image_id  # distinct from the test image
    archive = save_image_archive(docker_engine, tag, tmp_path / "archived.tar")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    docker_engine.images.remove(tag, force=True)
    assert not _has(docker_engine, tag)  # it exists only as an archive now

    with DrpSim(seed=7) as sim:
        path = f"docker-contexts/archived-{run_id}_v1"
        assert sim.put_file(path, archive) == sha
        url = f"{sim.url}/api/v3/files/{path}"
        bearer = {"Authorization": f"Bearer {sim.token}"}
        assert requests.head(url, headers=bearer, timeout=30).headers[SHA_HEADER] == sha
        with requests.get(url, headers=bearer, stream=True, timeout=30) as got:
            got.raise_for_status()
            loaded = docker_engine.images.load(got.iter_content(1024 * 1024))
        wait_for(lambda: sim.download_count(path) == 1, 5)
    assert [img.id for img in loaded] == [image_id]
    assert tag in docker_engine.images.get(image_id).tags  # the archive carried its name


def _has(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True

"""The engine adapter against both engines DRP's plugin supports: Docker and Podman (its
Docker-compatible API, ``podman system service``). Every case runs on both."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from pool.contexts.artifacts import AGENT_PATH_ENV, Agent
from pool.contexts.engine import DockerEngine, EnsureAction
from pool.contexts.models import ContextSpec
from pool.errors import EngineUnavailableError, MountNotAllowedError
from pool.settings import Settings
from tests import support

pytestmark = [pytest.mark.integration, pytest.mark.no_broker]

PODMAN_SOCK = os.environ.get("CTXPOOL_TEST_PODMAN_SOCK", "/run/ctxpool-podman.sock")


class FixedAgent:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def current(self) -> Agent:
        return self.agent


@pytest.fixture(params=["docker", "podman"])
def engine_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "docker":
        return None
    url = f"unix://{PODMAN_SOCK}"
    try:
        docker.DockerClient(base_url=url, timeout=10).ping()
    except Exception as exc:
        support.need(
            False, f"no Podman API at {PODMAN_SOCK} ({exc}); scripts/bootstrap.sh ensure_podman"
        )
    return url


@pytest.fixture
def client(engine_url: str | None) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=engine_url) if engine_url else support.docker_client()
    yield c
    c.close()


@pytest.fixture
def ctx(client: docker.DockerClient) -> Iterator[str]:
    name = "eng" + secrets.token_hex(3)
    yield name
    for row in client.api.containers(all=True, filters={"name": f"drp-{name}-"}):
        client.api.remove_container(row["Id"], force=True)


def _engine(client: docker.DockerClient, engine_url: str | None, **kw: Any) -> DockerEngine:
    kw.setdefault("agent_inject", False)
    settings = Settings(docker_url=engine_url, pull_missing_images=False, **kw)  # type: ignore[arg-type]
    return DockerEngine(client, settings)


def _inspect(client: docker.DockerClient, cid: str) -> dict[str, Any]:
    return dict(client.api.inspect_container(cid))


def test_create_keep_replace_remove(
    client: docker.DockerClient, engine_url: str | None, ctx: str
) -> None:
    image = support.build_test_image(client)
    engine = _engine(client, engine_url)
    spec = ContextSpec(uuid="u1", context=ctx, image=image)
    first = engine.ensure(spec, 1, "n1", fresh=True)
    assert first.action is EnsureAction.CREATED
    assert first.image_id
    again = engine.ensure(spec, 1, "n1")
    assert (again.action, again.container_id) == (EnsureAction.UNCHANGED, first.container_id)
    attrs = _inspect(client, first.container_id)
    labels = attrs["Config"]["Labels"]
    assert (labels["ctxpool.uuid"], labels["ctxpool.owner"]) == ("u1", "n1")
    logs = attrs["HostConfig"]["LogConfig"]
    if engine_url is None:  # Docker: json-file with both options
        assert logs["Config"] == {"max-size": "10m", "max-file": "3"}
    else:  # Podman maps json-file to its k8s-file driver, which takes the size only (its
        # compatible inspect does not show it; its own API does)
        url = f"{client.api.base_url}/v4.0.0/libpod/containers/{first.container_id}/json"
        assert client.api.get(url).json()["HostConfig"]["LogConfig"]["Size"] == "10MB"
    changed = engine.ensure(spec.model_copy(update={"env": {"A": "1"}}), 2, "n1")
    assert changed.action is EnsureAction.REPLACED
    refs = engine.list_containers(owner="n1", uuid="u1")
    assert [r.id for r in refs] == [changed.container_id]
    assert engine.remove("u1", "n1") == 1
    assert engine.list_containers(uuid="u1") == []


def test_mounts_ports_and_refusals(
    client: docker.DockerClient, engine_url: str | None, ctx: str, tmp_path: Path
) -> None:
    image = support.build_test_image(client)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "f").write_text("hi\n")
    port = support.free_port()
    engine = _engine(
        client, engine_url, allowed_mounts=[f"{tmp_path}/*"], allowed_ports=f"{port}-{port}"
    )
    spec = ContextSpec(
        uuid="u2",
        context=ctx,
        image=image,
        volumes=[f"type=bind,source={tmp_path}/ro,target=/ro"],
        publish_ports=[f"127.0.0.1:{port}:80"],
    )
    result = engine.ensure(spec, 1, "n1", fresh=True)
    attrs = _inspect(client, result.container_id)
    mount = next(m for m in attrs["Mounts"] if m["Destination"] == "/ro")
    assert mount["RW"] is False
    assert attrs["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"] == str(port)
    out = client.containers.get(result.container_id).exec_run(["cat", "/ro/f"]).output
    assert out == b"hi\n"
    bad = spec.model_copy(update={"uuid": "u3", "volumes": ["type=bind,source=/,target=/h"]})
    with pytest.raises(MountNotAllowedError, match="root file system"):
        engine.ensure(bad, 1, "n1", fresh=True)
    assert engine.list_containers(uuid="u3") == []


def test_agent_injection_runs_drpcli_and_a_new_agent_rolls_the_container(
    client: docker.DockerClient, engine_url: str | None, ctx: str, tmp_path: Path
) -> None:
    image = support.build_test_image(client)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o777)
    agent_file = tmp_path / "drpcli"
    agent_file.write_text('#!/bin/sh\necho "$PATH $RS_UUID $*" > /out/args\nexec sleep 3600\n')
    agent_file.chmod(0o755)
    engine = _engine(client, engine_url, agent_inject=True, allowed_rw_mounts=[str(out)])
    engine.agent = FixedAgent(Agent(path=str(agent_file), sha256="a" * 64))
    spec = ContextSpec(
        uuid="u4", context=ctx, image=image, volumes=[f"type=bind,source={out},target=/out"]
    )
    first = engine.ensure(spec, 1, "n1", fresh=True)
    assert first.agent_sha256 == "a" * 64
    support.wait_for(lambda: (out / "args").exists(), 20, what="drpcli ran")
    assert (out / "args").read_text() == f"{AGENT_PATH_ENV} u4 machines processjobs\n"
    attrs = _inspect(client, first.container_id)
    assert attrs["Config"]["Entrypoint"] == ["/usr/bin/drpcli"]
    agent_mount = next(m for m in attrs["Mounts"] if m["Destination"] == "/usr/bin/drpcli")
    assert agent_mount["RW"] is False
    assert engine.ensure(spec, 1, "n1").action is EnsureAction.UNCHANGED
    engine.agent = FixedAgent(Agent(path=str(agent_file), sha256="b" * 64))
    rolled = engine.ensure(spec, 1, "n1")
    assert rolled.action is EnsureAction.REPLACED
    # the per-context opt-out: the image's own command, no mount
    own = engine.ensure(spec.model_copy(update={"uuid": "u5", "agent": False}), 1, "n1", True)
    attrs = _inspect(client, own.container_id)
    assert all(m["Destination"] != "/usr/bin/drpcli" for m in attrs["Mounts"])


def test_unreachable_engine_is_a_transient_error(tmp_path: Path) -> None:
    settings = Settings(docker_url=f"unix://{tmp_path}/none.sock", docker_timeout_s=2)  # type: ignore[call-arg]
    with pytest.raises(EngineUnavailableError):
        DockerEngine.from_settings(settings).version()

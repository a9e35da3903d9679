"""Helpers of the compose test: build the images offline, run one compose project, tear it down.

Every resource a run creates is named after its project (``ctxpool-t<hex>``) and removed
afterwards: the compose containers, networks and volumes (``down -v``) and the context
containers the nodes created on the host engine (not compose containers: found by their
``ctxpool.owner`` label). The images are kept: they are the cache of the next run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from tests.support import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
IMAGES_SCRIPT = REPO / "scripts" / "compose-images.sh"
#: Images the test builds (not the deployment's default names: a test never replaces them).
APP_IMAGE = "ctxpool-test/app:compose"
REDIS_IMAGE = "ctxpool-test/redis:compose"
#: uid of the app image's user: the nodes' host state dir must be writable by it.
APP_UID = 10001
#: Variables of the calling environment a compose run must not inherit (interpolation reads
#: the environment before the env file: a developer's CTXPOOL_DRP_URL would leak in).
_INHERITED_PREFIXES = ("CTXPOOL_", "REDIS_", "FLOWER_", "DOCKER_GID", "DEMO_", "METRICS_")


def compose_command() -> list[str] | None:
    """``docker-compose`` (Debian 12's 1.29), else ``docker compose`` (v2); ``None`` if neither.

    ``CTXPOOL_COMPOSE`` picks one explicitly (e.g. ``"docker compose"``).
    """
    chosen = os.environ.get("CTXPOOL_COMPOSE")
    if chosen:
        return chosen.split()
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return ["docker", "compose"] if probe.returncode == 0 else None


def free_port(host: str) -> int:
    """A TCP port nobody listens on at ``host`` (a short race with others is acceptable)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def bridge_gateway(client: docker.DockerClient) -> str:
    """The host's address on Docker's default bridge: where contexts reach published ports."""
    config = client.networks.get("bridge").attrs["IPAM"]["Config"]
    return str(config[0].get("Gateway") or "172.17.0.1")


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}


def build_images(log_path: Path) -> float:
    """Run ``scripts/compose-images.sh`` (base image, wheels, images, demo image).

    Returns:
        Seconds it took.

    Raises:
        AssertionError: the script failed (its output is in the message).
    """
    env = {**clean_environ(), "CTXPOOL_IMAGE": APP_IMAGE, "CTXPOOL_REDIS_IMAGE": REDIS_IMAGE}
    start = time.monotonic()
    done = subprocess.run(
        ["bash", str(IMAGES_SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    took = time.monotonic() - start
    with log_path.open("a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode != 0:
        raise AssertionError(f"compose-images.sh failed:\n{(done.stdout + done.stderr)[-4000:]}")
    return took


@dataclass
class Stack:
    """One compose project of the demo profile, with its own secrets, ports and state dir."""

    command: list[str]
    work_dir: Path
    gateway: str
    agent_inject: bool
    project: str = field(default_factory=lambda: "ctxpool-t" + secrets.token_hex(4))
    redis_password: str = field(default_factory=lambda: secrets.token_hex(16))
    flower_user: str = "admin"
    flower_password: str = field(default_factory=lambda: secrets.token_hex(12))
    drp_token: str = field(default_factory=lambda: secrets.token_hex(12))
    ports: dict[str, int] = field(default_factory=dict)
    #: monotonic time of ``up``
    started: float = 0.0

    def __post_init__(self) -> None:
        self.state_dir = self.work_dir / "state"
        self.state_dir.mkdir(parents=True)
        os.chown(self.state_dir, APP_UID, APP_UID)
        for name in ("redis", "flower", "metrics"):
            self.ports[name] = free_port("127.0.0.1")
        self.ports["drpsim"] = free_port(self.gateway)
        self.env_file = self.work_dir / "compose.env"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in self.variables().items()))
        self.env_file.chmod(0o600)

    def up(self) -> None:
        self.started = time.monotonic()
        self.compose("up", "-d", "--no-build")

    def since_up(self) -> str:
        return f"{time.monotonic() - self.started:.1f} s after up"

    @property
    def nodes(self) -> dict[str, str]:
        """Tag -> node name."""
        return {tag: f"{self.project}-{tag}" for tag in ("ci", "audit")}

    @property
    def drp_url(self) -> str:
        """The simulator as the host (and the contexts) reach it."""
        return f"http://{self.gateway}:{self.ports['drpsim']}"

    @property
    def secrets(self) -> list[str]:
        return [self.redis_password, self.flower_password, self.drp_token]

    def variables(self) -> dict[str, str]:
        return {
            "CTXPOOL_IMAGE": APP_IMAGE,
            "CTXPOOL_REDIS_IMAGE": REDIS_IMAGE,
            "REDIS_PASSWORD": self.redis_password,
            "FLOWER_BASIC_AUTH": f"{self.flower_user}:{self.flower_password}",
            "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
            "CTXPOOL_HOST_STATE_DIR": str(self.state_dir),
            "CTXPOOL_DRP_TOKEN": self.drp_token,
            "CTXPOOL_DRP_ENDPOINTS": self.drp_url,
            "CTXPOOL_NODE_PREFIX": self.project,
            "CTXPOOL_AGENT_INJECT": "true" if self.agent_inject else "false",
            "REDIS_PUBLISH": f"127.0.0.1:{self.ports['redis']}",
            "FLOWER_PUBLISH": f"127.0.0.1:{self.ports['flower']}",
            "METRICS_PUBLISH": f"127.0.0.1:{self.ports['metrics']}",
            "DEMO_DRP_PUBLISH": f"{self.gateway}:{self.ports['drpsim']}",
        }

    def compose(
        self, *args: str, check: bool = True, timeout_s: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run compose on this project (demo profile, the test's env file only)."""
        argv = [*self.command, "-f", str(COMPOSE_FILE), "-p", self.project,
                "--env-file", str(self.env_file), "--profile", "demo", *args]  # fmt: skip
        done = subprocess.run(
            argv,
            cwd=REPO,
            env=clean_environ(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
        return done

    def health(self, client: docker.DockerClient) -> Mapping[str, str]:
        """Service -> health status of each of the project's containers."""
        out: dict[str, str] = {}
        label = f"com.docker.compose.project={self.project}"
        for c in client.containers.list(all=True, filters={"label": label}):
            state = c.attrs["State"]
            status = state.get("Health", {}).get("Status") or state["Status"]
            out[c.labels.get("com.docker.compose.service", c.name)] = status
        return out

    def context_containers(self, client: docker.DockerClient) -> list[Container]:
        """The containers the project's nodes created on the host engine."""
        found: list[Container] = []
        for node in self.nodes.values():
            found += client.containers.list(all=True, filters={"label": f"ctxpool.owner={node}"})
        return found

    def teardown(self, client: docker.DockerClient) -> list[str]:
        """``down -v`` and remove the nodes' context containers; returns what was left over."""
        self.compose("down", "-v", "--remove-orphans", "-t", "20", check=False)
        for container in self.context_containers(client):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        label = f"com.docker.compose.project={self.project}"
        left = [c.name for c in client.containers.list(all=True, filters={"label": label})]
        left += [c.name for c in self.context_containers(client)]
        left += [v.name for v in client.volumes.list(filters={"label": label})]
        return left

"""Docker engine adapter: ensure, remove and list context containers through docker-py.

Containers are found by labels, never by name alone: several nodes may share one engine
(tests, small sites), and a node must never touch a container another node owns.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import docker
from docker.types import Mount

from pool.contexts import jobs, mounts
from pool.contexts.artifacts import (
    AGENT_COMMAND,
    AGENT_PATH,
    AGENT_PATH_ENV,
    Agent,
    AgentSource,
    ImageSource,
    RegistryImages,
)
from pool.contexts.dockerapi import EngineConflictError, EngineNotFoundError, engine_call
from pool.contexts.models import ContextSpec, JobResult, JobSpec
from pool.contexts.security import check_image_allowed, secure_defaults
from pool.errors import (
    ArtifactUnavailableError,
    CapabilityNotAllowedError,
    EngineError,
    ImageUnavailableError,
    PermanentContextError,
)
from pool.settings import Settings

log = logging.getLogger(__name__)

LABEL_UUID = "ctxpool.uuid"
LABEL_GENERATION = "ctxpool.generation"
LABEL_SPEC_HASH = "ctxpool.spec-hash"
LABEL_OWNER = "ctxpool.owner"
LABEL_CONTEXT = "ctxpool.context"


class _NameTakenError(EngineError):
    """Create failed: a container of that name exists."""


class EnsureAction(StrEnum):
    UNCHANGED = "unchanged"
    STARTED = "started"
    CREATED = "created"
    REPLACED = "replaced"


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """A context container as the engine reports it."""

    id: str
    name: str
    uuid: str
    owner: str
    spec_hash: str
    generation: int
    status: str

    @classmethod
    def from_container(cls, container: Any) -> ContainerRef:
        """From a docker-py ``Container`` object (fully inspected)."""
        return cls._build(container.id, container.name, container.labels or {}, container.status)

    @classmethod
    def from_summary(cls, row: dict[str, Any]) -> ContainerRef:
        """From one row of the engine's container list (no per-container inspect)."""
        names = row.get("Names") or [""]
        return cls._build(
            row["Id"], names[0].lstrip("/"), row.get("Labels") or {}, row.get("State", "")
        )

    @classmethod
    def _build(cls, cid: str, name: str, labels: dict[str, str], status: str) -> ContainerRef:
        try:
            generation = int(labels.get(LABEL_GENERATION, "0"))
        except ValueError:
            generation = 0
        return cls(
            id=cid,
            name=name,
            uuid=labels.get(LABEL_UUID, ""),
            owner=labels.get(LABEL_OWNER, ""),
            spec_hash=labels.get(LABEL_SPEC_HASH, ""),
            generation=generation,
            status=status,
        )


@dataclass(frozen=True, slots=True)
class EnsureResult:
    action: EnsureAction
    container_id: str
    #: For a container created now (``CREATED``/``REPLACED``): what runs, for DRP.
    image_id: str = ""
    started_at: str = ""
    agent_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Granted:
    """What the node's policy grants a spec: its mounts (read-only where only reading is
    allowed) and its published ports."""

    volumes: list[mounts.MountSpec]
    ports: list[mounts.PortSpec]


def container_hash(spec: ContextSpec, agent: Agent | None) -> str:
    """The ``ctxpool.spec-hash`` label: the spec's hash, plus the injected agent's checksum
    (a new drpcli rolls the containers)."""
    if agent is None:
        return spec.spec_hash()
    blob = f"{spec.spec_hash()}:{agent.sha256}".encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _mount(spec: mounts.MountSpec) -> Mount:
    return Mount(
        target=spec.target,
        source=spec.source or None,
        type=spec.type,
        read_only=spec.readonly,
        tmpfs_size=spec.tmpfs_size,
        tmpfs_mode=spec.tmpfs_mode,
    )


def _ports(specs: list[mounts.PortSpec]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in specs:
        key = f"{p.container_port}/{p.proto}"
        out[key] = (p.host_ip, p.host_port) if p.host_ip else p.host_port
    return out


class DockerEngine:
    """Context containers on one Docker engine, with the secure defaults of ``Settings``."""

    def __init__(
        self,
        client: docker.DockerClient,
        settings: Settings,
        images: ImageSource | None = None,
        agent: AgentSource | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.images: ImageSource = images or RegistryImages(client, settings)
        self.agent = agent

    @classmethod
    def from_settings(cls, settings: Settings) -> DockerEngine:
        """Connect to ``settings.docker_url`` (or the environment's Docker).

        Raises:
            EngineUnavailableError: the engine cannot be reached.
        """
        with engine_call("connect"):
            if settings.docker_url:
                client = docker.DockerClient(
                    base_url=settings.docker_url, timeout=settings.docker_timeout_s
                )
            else:
                client = docker.from_env(timeout=settings.docker_timeout_s)
        return cls(client, settings)

    def version(self) -> str:
        """The engine's server version.

        Raises:
            EngineUnavailableError: the engine cannot be reached.
        """
        with engine_call("version"):
            return str(self.client.version().get("Version", "unknown"))

    # ---- policy -----------------------------------------------------------------------------

    def check_policy(self, spec: ContextSpec) -> Granted:
        """Reject specs the node's policy forbids; returns the mounts and ports as granted
        (checked once, used by the create).

        Raises:
            ImageNotAllowedError: the image matches no ``allowed_images`` pattern.
            CapabilityNotAllowedError: a capability outside ``cap_allowlist`` is requested.
        """
        check_image_allowed(spec.image, self.settings)
        extra = sorted(set(spec.cap_add) - set(self.settings.cap_allowlist))
        if extra:
            raise CapabilityNotAllowedError(f"capabilities not allowed: {', '.join(extra)}")
        return Granted(
            mounts.allowed_mounts(spec.volumes, self.settings, self._engine_socket()),
            mounts.allowed_ports(spec.publish_ports, self.settings),
        )

    def _engine_socket(self) -> str | None:
        url = self.settings.docker_url or os.environ.get("DOCKER_HOST", "")
        return url.removeprefix("unix://") if url.startswith("unix://") else None

    def injected_agent(self, spec: ContextSpec) -> Agent | None:
        """The drpcli to inject into ``spec``'s container, ``None`` when the image brings its
        own agent (per context, or ``CTXPOOL_AGENT_INJECT=false``).

        Raises:
            ArtifactUnavailableError: injection is on but drpcli cannot be had now.
        """
        if not (spec.agent and self.settings.agent_inject):
            return None
        if self.agent is None:
            raise ArtifactUnavailableError(
                "agent injection is on but this node has no drpcli source: set CTXPOOL_DRP_URL "
                "or CTXPOOL_DRPCLI (or CTXPOOL_AGENT_INJECT=false)"
            )
        return self.agent.current()

    # ---- queries ----------------------------------------------------------------------------

    def list_containers(
        self, owner: str | None = None, uuid: str | None = None
    ) -> list[ContainerRef]:
        """Context containers (running or not), filtered by owner and/or uuid labels.

        Raises:
            EngineError: the engine failed.
        """
        labels = [LABEL_UUID if uuid is None else f"{LABEL_UUID}={uuid}"]
        if owner is not None:
            labels.append(f"{LABEL_OWNER}={owner}")
        # one list call; docker-py's containers.list() would inspect each one afterwards
        # and fail on a container removed in between
        with engine_call("list containers"):
            rows = self.client.api.containers(all=True, filters={"label": labels})
        return [ContainerRef.from_summary(row) for row in rows]

    # ---- changes ----------------------------------------------------------------------------

    def ensure(
        self, spec: ContextSpec, generation: int, owner: str, fresh: bool = False
    ) -> EnsureResult:
        """Make the engine run exactly one container for ``spec``, owned by ``owner``.

        Same spec and owner: at most a start (reads only when running). Anything else:
        the old container is replaced.

        Args:
            fresh: the context was just claimed from nobody, so no container is expected:
                create straight away and look around only if the name turns out taken.

        Raises:
            PermanentContextError: policy or image errors; retrying will not help.
            EngineError: the engine failed (transient).
        """
        granted = self.check_policy(spec)
        agent = self.injected_agent(spec)
        want_hash = container_hash(spec, agent)
        if fresh:
            try:
                return self._create(spec, generation, owner, want_hash, agent, granted, False)
            except _NameTakenError:
                log.info(
                    "context %s: %s exists already, reconciling it", spec.uuid, spec.container_name
                )
        # One list call finds both this node's containers of the context and any container
        # holding its name (another owner's, on a shared engine or after a takeover).
        found = self.list_containers(uuid=spec.uuid)
        named = next((c for c in found if c.name == spec.container_name), None)
        for stale in (c for c in found if c.owner == owner and c.name != spec.container_name):
            self._remove(stale, "context renamed")

        if named is not None and named.spec_hash == want_hash and named.owner == owner:
            if named.status == "running":
                return EnsureResult(EnsureAction.UNCHANGED, named.id)
            if named.status in ("created", "exited", "paused"):
                self._start(named)
                return EnsureResult(EnsureAction.STARTED, named.id)
        replaced = named is not None
        if named is not None:
            self._remove(named, "spec or owner changed")
        return self._create(spec, generation, owner, want_hash, agent, granted, replaced)

    def _start(self, ref: ContainerRef) -> None:
        with engine_call(f"start {ref.name}"):
            if ref.status == "paused":
                self.client.api.unpause(ref.id)
            else:
                self.client.api.start(ref.id)

    def _create(
        self,
        spec: ContextSpec,
        generation: int,
        owner: str,
        spec_hash: str,
        agent: Agent | None,
        granted: Granted,
        replaced: bool,
    ) -> EnsureResult:
        image = self.images.resolve(spec)
        res = spec.resources
        s = self.settings
        labels = {
            LABEL_UUID: spec.uuid,
            LABEL_GENERATION: str(generation),
            LABEL_SPEC_HASH: spec_hash,
            LABEL_OWNER: owner,
            LABEL_CONTEXT: spec.context,
        }
        kwargs: dict[str, Any] = {
            "name": spec.container_name,
            "labels": labels,
            "environment": spec.container_env(s.drp_endpoints),
            "detach": True,
            **secure_defaults(s, res.memory_mb, res.cpus, res.pids),
            "cap_add": list(spec.cap_add) or None,
            "restart_policy": {"Name": "unless-stopped"},
        }
        binds = [_mount(m) for m in granted.volumes]
        if agent is not None:
            # DRP's docker-context engine: drpcli bind-mounted into a standard image
            binds.append(Mount(target=AGENT_PATH, source=agent.path, type="bind", read_only=True))
            kwargs["entrypoint"] = [AGENT_PATH]
            kwargs["command"] = list(AGENT_COMMAND)
            kwargs["environment"] = {"PATH": AGENT_PATH_ENV, **kwargs["environment"]}
        elif spec.command:
            kwargs["command"] = list(spec.command)
        if binds:
            kwargs["mounts"] = binds
        ports = granted.ports
        if ports:
            kwargs["ports"] = _ports(ports)
        try:
            with engine_call(f"create {spec.container_name}"):
                container = self.client.containers.create(image.ref, **kwargs)
        except EngineNotFoundError as exc:
            raise ImageUnavailableError(f"image {spec.image!r} not found: {exc}") from exc
        except EngineConflictError as exc:
            raise _NameTakenError(
                f"create {spec.container_name}: the name is taken by a container without "
                "ctxpool labels (or one being created concurrently); remove it"
            ) from exc
        try:
            with engine_call(f"start {spec.container_name}"):
                container.start()
        except PermanentContextError:
            # the spec cannot start (bad command, ...): leave nothing half-made behind
            self._remove(ContainerRef.from_container(container), "failed to start")
            raise
        started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        log.info(
            "context %s: started container %s (%s) generation %d",
            spec.uuid,
            spec.container_name,
            container.short_id,
            generation,
        )
        return EnsureResult(
            EnsureAction.REPLACED if replaced else EnsureAction.CREATED,
            str(container.id),
            image_id=image.image_id,
            started_at=started_at,
            agent_sha256=agent.sha256 if agent else None,
        )

    def _remove(self, ref: ContainerRef, why: str) -> None:
        try:
            with engine_call(f"remove {ref.name}"):
                self.client.api.remove_container(ref.id, force=True, v=True)
            log.info("context %s: removed container %s (%s)", ref.uuid, ref.name, why)
        except EngineNotFoundError:
            pass  # gone already
        except EngineConflictError:
            log.info("context %s: removal of %s already in progress", ref.uuid, ref.name)

    def remove(self, uuid: str, owner: str) -> int:
        """Remove every container of ``uuid`` labelled as owned by ``owner``.

        Returns:
            How many containers were removed.

        Raises:
            EngineError: the engine failed.
        """
        refs = self.list_containers(owner=owner, uuid=uuid)
        for ref in refs:
            self._remove(ref, "context removed")
        return len(refs)

    def run_job(self, job: JobSpec, owner: str | None = None) -> JobResult:
        """Run a one-shot job container (an audit's container check) with the contexts'
        image allowlist and secure defaults; it is removed afterwards, also on timeouts and
        errors. See :func:`pool.contexts.jobs.run_job`.

        Args:
            job: what to run.
            owner: the label naming who ran it (default: this node).

        Raises:
            ImageNotAllowedError: the image is outside the allowlist (no container made).
            PermanentContextError: the image cannot be had, or the engine refused the job.
            EngineError: the engine failed (transient).
        """
        return jobs.run_job(self.client, self.settings, job, owner or self.settings.node_name)

    def remove_stale_jobs(self, owner: str) -> int:
        """Remove ``owner``'s audit job containers past their expiry (a node killed mid-job).

        Raises:
            EngineError: listing failed.
        """
        return jobs.remove_stale_jobs(self.client, owner)

    def remove_container(self, ref: ContainerRef, why: str) -> None:
        """Remove one container found by :meth:`list_containers`."""
        self._remove(ref, why)

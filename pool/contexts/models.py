"""pydantic models that cross package and process boundaries."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pool.queues import DEFAULT_TAG
from pool.settings import validate_name

_UUID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Env names the container contract owns; a spec's ``env`` may not override them.
CONTRACT_ENV = frozenset({"RS_UUID", "RS_TOKEN", "RS_CONTEXT", "RS_ENDPOINTS", "RS_ENDPOINT"})

Uuid = Annotated[str, Field(min_length=1, max_length=128)]


def check_uuid(value: str) -> str:
    """Validate a machine UUID (or any id usable in a container name).

    Raises:
        ValueError: characters outside ``[A-Za-z0-9_.-]``.
    """
    if not _UUID_RE.match(value):
        raise ValueError(f"uuid {value!r} must be characters of [A-Za-z0-9_.-]")
    return value


class Resources(BaseModel):
    """Container limits; ``None`` means the node's configured default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory_mb: int | None = Field(None, ge=4, le=1 << 20)
    cpus: float | None = Field(None, gt=0, le=512)
    pids: int | None = Field(None, ge=8, le=1 << 22)


class ContextSpec(BaseModel):
    """What one context container must look like. The bridge builds these from DRP objects."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uuid: str = Field(description="DRP machine UUID the context serves.")
    context: str = Field(description="DRP context name (the container name's middle part).")
    image: str = Field(min_length=1, max_length=512)
    tag: str = Field(DEFAULT_TAG, description="Which node set hosts it.")
    token: SecretStr = Field(SecretStr(""), description="Machine token (RS_TOKEN); never logged.")
    endpoints: list[str] = Field(default_factory=list, description="DRP API URLs (RS_ENDPOINTS).")
    env: dict[str, str] = Field(default_factory=dict)
    command: list[str] | None = None
    resources: Resources = Field(default_factory=Resources)
    cap_add: list[str] = Field(default_factory=list)
    volumes: list[str] = Field(
        default_factory=list,
        description="context/volumes: `--mount` specs; the node checks them against its "
        "allowlist (a refusal is a permanent error on the context).",
    )
    publish_ports: list[str] = Field(
        default_factory=list, description="context/publish-ports: `-p` specs, node-checked."
    )
    agent: bool = Field(
        True,
        description="Inject drpcli and run `drpcli machines processjobs` (False: the image "
        "brings its own agent).",
    )
    image_pull: str | None = Field(None, description="Context Meta.Imagepull: archive URL.")
    image_checksum: str | None = Field(
        None, description="Context Meta.Checksum: sha256 (hex) of the image archive."
    )

    _uuid = field_validator("uuid")(check_uuid)

    @field_validator("context")
    @classmethod
    def _check_context(cls, value: str) -> str:
        return validate_name(value, "context name")

    @field_validator("tag")
    @classmethod
    def _check_tag(cls, value: str) -> str:
        return validate_name(value, "tag")

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME_RE.match(name):
                raise ValueError(f"env name {name!r} is not a valid variable name")
            if name in CONTRACT_ENV:
                raise ValueError(f"env {name} is set by ctxpool from the spec; do not pass it")
        return value

    @field_validator("cap_add")
    @classmethod
    def _norm_caps(cls, value: list[str]) -> list[str]:
        return sorted({cap.upper().removeprefix("CAP_") for cap in value})

    @field_validator("image_checksum")
    @classmethod
    def _norm_checksum(cls, value: str | None) -> str | None:
        if not value:
            return None
        return value.strip().lower().removeprefix("sha256:")

    @property
    def container_name(self) -> str:
        return f"drp-{self.context}-{self.uuid}"

    def container_env(self, default_endpoints: list[str] | None = None) -> dict[str, str]:
        """The env contract of DRP's docker-context engine plus the spec's own env."""
        endpoints = self.endpoints or list(default_endpoints or [])
        env = dict(self.env)
        env.update(
            RS_UUID=self.uuid,
            RS_TOKEN=self.token.get_secret_value(),
            RS_CONTEXT=self.context,
            RS_ENDPOINTS=" ".join(endpoints),
            RS_ENDPOINT=endpoints[0] if endpoints else "",
        )
        return env

    def spec_hash(self) -> str:
        """Hash of everything that shapes the container, token excluded.

        A renewed token alone must not restart a running agent; placement (``tag``) does not
        change the container either.
        """
        data = self.model_dump(mode="json", exclude={"token", "tag"})
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_store(self) -> str:
        """JSON for the state store, token included (the store is trusted; logs are not)."""
        data = self.model_dump(mode="json")
        data["token"] = self.token.get_secret_value()
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


class ContainerInfo(BaseModel):
    """``context/container-info``: what runs a context, written back to DRP on create and
    replace (JSON keys in DRP's style)."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    node: str = Field(alias="Node")
    container_id: str = Field(alias="ContainerId")
    container_name: str = Field(alias="ContainerName")
    image: str = Field(alias="Image")
    image_id: str = Field(alias="ImageId")
    started_at: str = Field(alias="StartedAt", description="RFC 3339, UTC.")
    agent_sha256: str | None = Field(None, alias="AgentSha256")

    def to_param(self) -> dict[str, str | None]:
        return self.model_dump(by_alias=True)


class Desired(StrEnum):
    PRESENT = "present"
    ABSENT = "absent"


class DesiredState(BaseModel):
    """The desired state of one context as kept in the store."""

    model_config = ConfigDict(frozen=True)

    uuid: str
    desired: Desired
    generation: int = Field(ge=0)
    spec: ContextSpec | None = None
    updated_at: float = 0.0
    preferred: str | None = Field(None, description="Placement hint: the node asked to run it.")


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    REMOVED = "removed"
    #: A transient failure (engine down, timeout): retried by the next nudge or sweep.
    ERROR = "error"
    #: A permanent failure (policy, missing image): parked, holds no capacity, and is not
    #: tried again until the spec changes.
    FAILED = "failed"


class ContextStatus(BaseModel):
    """Desired and observed state of one context, for the API and the CLI."""

    uuid: str
    desired: Desired | None = None
    generation: int | None = None
    tag: str | None = None
    owner: str | None = None
    owner_alive: bool = False
    state: RunState = RunState.PENDING
    applied_generation: int | None = None
    container_id: str | None = None
    last_error: str | None = None
    error_generation: int | None = None
    updated_at: float | None = None


class Nudge(BaseModel):
    """Payload of ``tasks.contexts.reconcile``: which context to look at (nothing else)."""

    model_config = ConfigDict(extra="forbid")

    uuid: str
    generation: int = Field(0, ge=0, description="Generation the sender saw; informative only.")
    hops: int = Field(0, ge=0, le=16, description="Forwards so far, to break forwarding loops.")

    _uuid = field_validator("uuid")(check_uuid)


#: Sends a nudge to a queue: ``publish(nudge, queue_name)``.
Publisher = Callable[[Nudge, str], None]
#: Sends many nudges at once: ``publish_many([(nudge, queue_name), ...])``.
BatchPublisher = Callable[[Sequence[tuple[Nudge, str]]], None]


class JobSpec(BaseModel):
    """A short-lived container that runs one command and is removed (an audit's container
    check). It gets the secure defaults of contexts, a read-only root file system with a small
    ``/tmp``, and no network unless ``network`` allows it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str = Field(min_length=1, max_length=512)
    command: list[str] | None = Field(None, description="Command (default: the image's).")
    env: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(60.0, gt=0, le=86400, description="Killed after this long.")
    network: bool = Field(False, description="Attach the engine's default network.")
    read_only: bool = Field(True, description="Read-only root file system (tmpfs /tmp).")
    resources: Resources = Field(default_factory=Resources)
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels (who runs it, for which check)."
    )

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: dict[str, str]) -> dict[str, str]:
        bad = sorted(name for name in value if not _ENV_NAME_RE.match(name))
        if bad:
            raise ValueError(f"invalid env names: {', '.join(bad)}")
        return value


class JobResult(BaseModel):
    """What a job came to. ``exit_code`` is ``None`` when it was killed at its timeout."""

    model_config = ConfigDict(frozen=True)

    container_name: str
    image_id: str
    exit_code: int | None
    timed_out: bool
    stdout: str = Field(description="Its standard output (the first 64 KiB).")
    stderr: str = Field(description="The last 4 KiB of its standard error.")
    elapsed_ms: float

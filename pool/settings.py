"""ctxpool settings: one pydantic-settings model, built once and passed down.

Values come from (highest priority first) keyword arguments, ``CTXPOOL_*`` environment
variables, and an optional TOML file named by ``CTXPOOL_CONFIG_FILE``.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from pool.limits.spec import Limits
from pool.schedule import AuditSchedule

#: Linux capabilities a context spec may add back (everything else stays dropped).
DEFAULT_CAP_ALLOWLIST = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "NET_BIND_SERVICE")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(base) / "ctxpool"


def validate_name(value: str, what: str) -> str:
    """Check that a node name or tag is usable in a queue and container name.

    Raises:
        ValueError: the name has characters outside ``[A-Za-z0-9_.-]`` or is too long.
    """
    if not _NAME_RE.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-63 characters of [A-Za-z0-9_.-], starting alphanumeric"
        )
    return value


class Settings(BaseSettings):
    """Everything a node, the bridge and the CLI need to know."""

    model_config = SettingsConfigDict(
        env_prefix="CTXPOOL_", extra="ignore", validate_default=True, frozen=True
    )

    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Celery broker: redis://, rediss:// or amqp:// (RabbitMQ).",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis for the state store (always Redis)."
    )
    key_prefix: str = Field("ctxpool:", description="Prefix of every Redis key ctxpool writes.")
    node_name: str = Field(default_factory=socket.gethostname, description="This node's name.")
    tags: CommaList = Field(default_factory=list, description="Extra tags this node serves.")
    capacity: int = Field(20, ge=1, description="Contexts one node runs at most.")
    docker_url: str | None = Field(
        None, description="Docker API URL; unset means the environment (DOCKER_HOST or socket)."
    )
    docker_timeout_s: int = Field(60, ge=1)
    engine: str = Field("docker-context", description="The DRP context engine this pool serves.")
    allowed_images: CommaList = Field(
        default_factory=lambda: ["*"], description="Glob patterns of images contexts may use."
    )
    pull_missing_images: bool = Field(True, description="Try to pull an image that is absent.")
    cap_allowlist: CommaList = Field(default_factory=lambda: list(DEFAULT_CAP_ALLOWLIST))
    default_memory_mb: int = Field(512, ge=4)
    default_cpus: float = Field(1.0, gt=0)
    default_pids: int = Field(512, ge=8)
    heartbeat_s: float = Field(10.0, gt=0, description="Membership heartbeat interval.")
    heartbeat_ttl_s: float | None = Field(
        None, description="Membership TTL; default 3 x heartbeat_s. Older = stalled."
    )
    capacity_check_s: float = Field(1.0, gt=0, description="How often gating re-checks load.")
    sweep_s: float = Field(60.0, gt=0, description="Period of the container/state sweep.")
    lock_ttl_s: float = Field(120.0, gt=0, description="Lease of the per-context lock.")
    tombstone_ttl_s: int = Field(86400, ge=60, description="How long removed contexts are kept.")
    orphan_grace_s: float = Field(
        300.0, ge=0, description="How long a labelled container with no desired state is kept."
    )
    visibility_timeout_s: int = Field(
        3600, ge=60, description="Redis broker: redelivery of unacked messages after this."
    )
    send_events: bool = Field(True, description="Emit Celery task events (Flower).")
    drp_endpoints: CommaList = Field(
        default_factory=list, description="RS_ENDPOINTS given to containers when a spec has none."
    )
    limits: Annotated[Limits, NoDecode] = Field(
        default_factory=lambda: Limits.model_validate({}),
        description="Global limits: 'name=50/s burst 10 concurrency 4 per {host}; ...'.",
    )
    call_record_ttl_s: int = Field(
        86400, ge=60, description="How long results of integration calls are kept."
    )
    redfish_username: str | None = Field(
        None, description="Audits: BMC user for Redfish checks whose params name none."
    )
    redfish_password: SecretStr | None = Field(None, description="Audits: BMC password.")
    redfish_ca_bundle: str | None = Field(
        None, description="Audits: CA bundle to verify BMCs' TLS with (default: system CAs)."
    )
    redfish_verify_tls: bool = Field(
        True, description="Audits: verify BMCs' TLS (self-signed BMCs: a CA bundle, or false)."
    )
    audit_retention_s: int = Field(
        7 * 86400, ge=60, description="How long audit batches and results are kept."
    )
    audit_sweep_s: float = Field(30.0, gt=0, description="Period of the audit batch sweep.")
    audit_grace_s: float = Field(
        30.0, ge=0, description="A running audit item is sent again after timeout + this."
    )
    audit_pending_after_s: float = Field(
        120.0,
        gt=0,
        description="Pending audit items are sent again after the batch made no progress "
        "for this long (their messages were lost).",
    )
    audit_schedules: list[AuditSchedule] = Field(
        default_factory=list, description="Scheduled audits (JSON list; see README Audits)."
    )
    drp_url: str | None = Field(None, description="DRP endpoint, e.g. https://drp:8092.")
    drp_token: SecretStr | None = Field(None, description="DRP API token (Bearer).")
    drp_username: str | None = Field(None, description="DRP user (with drp_password).")
    drp_password: SecretStr | None = Field(None, description="DRP password.")
    drp_ca_bundle: str | None = Field(None, description="CA bundle to verify DRP's TLS with.")
    drp_verify_tls: bool = Field(True, description="Verify DRP's TLS certificate.")
    resync_s: float = Field(300.0, gt=0, description="Bridge: full resync with DRP period.")
    bridge_metrics_port: int = Field(
        9809, ge=0, le=65535, description="Bridge: Prometheus metrics port (0: none)."
    )
    broker_name: str = Field(
        "context-broker", description="Bridge: the resource/broker value of clusters it serves."
    )
    node_metrics_port: int = Field(
        9810, ge=0, le=65535, description="Node: /healthz and /metrics port (0: none)."
    )
    coalesce_ms: int = Field(250, ge=0, le=60_000, description="Bridge: event coalescing window.")
    machine_token_ttl_s: int = Field(
        365 * 86400, ge=60, description="Bridge: TTL of machine tokens given to containers."
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="Local state: caches (drpcli, image archives), embedded Redis data, "
        "a node's per-process metric files.",
    )
    agent_inject: bool = Field(
        True,
        description="Bind-mount drpcli into contexts and run `drpcli machines processjobs` "
        "(a context opts out with Meta `ctxpool/agent: image`).",
    )
    drpcli: Path | None = Field(
        None, description="A local drpcli binary (sites that stage it by hand); else fetched."
    )
    drpcli_file: str = Field(
        "drpcli.{arch}.linux",
        description="Path of drpcli in DRP's file space ({arch}: the engine's, e.g. amd64).",
    )
    agent_check_s: float = Field(
        300.0, gt=0, description="How often a node asks DRP whether drpcli changed (HEAD)."
    )
    image_file_paths: CommaList = Field(
        default_factory=lambda: [
            "docker-contexts/{image}",
            "files/docker-contexts/{image}",
            "contexts/docker-context/{image}",
        ],
        description="Where context image archives are looked for in DRP's file space, in order.",
    )
    image_refresh_s: float = Field(
        3600.0,
        ge=0,
        description="An archive without Meta.Checksum is fetched again after this long.",
    )
    allowed_mounts: CommaList = Field(
        default_factory=list,
        description="Host path globs context/volumes may bind-mount, read-only.",
    )
    allowed_rw_mounts: CommaList = Field(
        default_factory=list,
        description="Host path globs context/volumes may bind-mount read-write.",
    )
    allowed_ports: str | None = Field(
        None, description="Host port range context/publish-ports may use, e.g. 20000-20999."
    )
    log_max_size: str = Field("10m", description="Container logs: json-file max-size.")
    log_max_files: int = Field(3, ge=1, le=100, description="Container logs: json-file max-file.")
    drp_machine: str | None = Field(
        None, description="Node: its own DRP machine (name or uuid) to show tags and liveness."
    )
    drp_machine_sync_s: float = Field(
        60.0, gt=0, description="Node: how often its DRP machine's params are re-asserted."
    )
    flower_port: int = Field(5555, ge=0, le=65535, description="ctxpool up: Flower's port.")
    flower_user: str = Field("ctxpool", description="Flower's basic-auth user.")
    flower_password: SecretStr | None = Field(
        None, description="Flower's basic-auth password (unset: generated once, kept 0600)."
    )
    metrics_port: int = Field(
        9808, ge=0, le=65535, description="The pool metrics exporter's port (ctxpool metrics)."
    )
    sim_port: int = Field(
        8092, ge=0, le=65535, description="ctxpool up without DRP: the simulator's port."
    )
    drain_step_timeout_s: float = Field(
        120.0, gt=0, description="Drain: how long one handed-off context may take to start."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CTXPOOL_CONFIG_FILE")
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise FileNotFoundError(f"CTXPOOL_CONFIG_FILE={config_file} does not exist")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    _split = field_validator(
        "tags",
        "allowed_images",
        "cap_allowlist",
        "drp_endpoints",
        "image_file_paths",
        "allowed_mounts",
        "allowed_rw_mounts",
        mode="before",
    )(_split_commas)

    @field_validator("allowed_ports")
    @classmethod
    def _check_ports(cls, value: str | None) -> str | None:
        if value:
            port_range(value)
        return value or None

    @property
    def port_range(self) -> tuple[int, int] | None:
        """``allowed_ports`` as (first, last), ``None`` when no host port may be published."""
        return port_range(self.allowed_ports) if self.allowed_ports else None

    @property
    def cache_dir(self) -> Path:
        """Content-addressed caches of this host (drpcli, image archives in flight)."""
        return self.state_dir / "cache"

    @property
    def metrics_dir(self) -> Path:
        """This node's per-process metric files (emptied at every start of the node)."""
        return self.state_dir / "metrics" / self.node_name

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: list[str]) -> list[str]:
        return [validate_name(tag, "tag") for tag in value]

    @field_validator("node_name")
    @classmethod
    def _check_node(cls, value: str) -> str:
        return validate_name(value, "node name")

    @field_validator("cap_allowlist")
    @classmethod
    def _upper_caps(cls, value: list[str]) -> list[str]:
        return [cap.upper().removeprefix("CAP_") for cap in value]

    @field_validator("key_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value or any(ch.isspace() for ch in value):
            raise ValueError("key_prefix must be non-empty without whitespace")
        return value

    @model_validator(mode="after")
    def _check_ttls(self) -> Settings:
        if self.heartbeat_ttl_s is not None and self.heartbeat_ttl_s <= self.heartbeat_s:
            raise ValueError("heartbeat_ttl_s must be longer than heartbeat_s")
        return self

    @property
    def membership_ttl_s(self) -> float:
        """Seconds after the last heartbeat at which a node counts as stalled."""
        return self.heartbeat_ttl_s if self.heartbeat_ttl_s is not None else 3 * self.heartbeat_s

    def redacted(self) -> dict[str, Any]:
        """Settings as a dict that is safe to log: passwords in URLs are masked."""
        data = self.model_dump()
        for key in ("broker_url", "redis_url", "docker_url", "drp_url"):
            if data.get(key):
                data[key] = redact_url(data[key])
        return data


def port_range(text: str) -> tuple[int, int]:
    """Parse ``"20000-20999"`` (or one port, ``"8080"``).

    Raises:
        ValueError: not a range of ports 1-65535 with first <= last.
    """
    first, sep, last = text.strip().partition("-")
    try:
        lo, hi = int(first), int(last if sep else first)
    except ValueError:
        raise ValueError(f"port range {text!r} must look like 20000-20999") from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"port range {text!r} must be within 1-65535, first <= last")
    return lo, hi


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z+]+://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


def redact_url(url: str) -> str:
    """Mask the password of ``scheme://user:password@host`` URLs."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)

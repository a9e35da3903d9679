"""``redfish-health``: a BMC's systems against expected health, power state and firmware.

For each system of the BMC (``GET /redfish/v1/Systems``, or the one named by ``system_id``)
it reads ``GET /redfish/v1/Systems/<id>``: ``Status.Health``, ``PowerState`` and the firmware
version, which is the system's ``BiosVersion`` or the ``FirmwareVersion`` of the Manager the
system is managed by (``Links.ManagedBy``). Any value off its expectation fails the target.

Calls are bound by the global limit ``redfish`` (one bucket per BMC with ``per {host}``).
Credentials come from the params or from ``CTXPOOL_REDFISH_USERNAME``/``_PASSWORD``; the
password is a secret: never logged, never in a result.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pool.audits.builtin.targets import parse_target
from pool.audits.checks import Check, CheckContext, CheckResult
from pool.calls.http import backoff_s, retry_after_s
from pool.limits.task import Deferred

log = logging.getLogger(__name__)

SYSTEMS = "/redfish/v1/Systems"
#: Statuses after which the BMC asks to be left alone for a while (the item is deferred).
BUSY_STATUSES = frozenset({429, 503})


class RedfishParams(BaseModel):
    """Parameters of ``redfish-health``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    system_id: str | None = Field(
        None, description="The system to check (default: every system the BMC lists)."
    )
    health: list[str] = Field(
        default_factory=lambda: ["OK"],
        description="Acceptable Status.Health values ([] to not check).",
    )
    power_state: str | None = Field("On", description="Expected PowerState (null: not checked).")
    firmware: str | None = Field(
        None, description="Expected firmware version, a glob such as '2.1*' (null: not checked)."
    )
    firmware_source: Literal["auto", "bios", "manager"] = Field(
        "auto",
        description="BiosVersion of the system, FirmwareVersion of its manager, or auto "
        "(BiosVersion when the system has one).",
    )
    scheme: Literal["https", "http"] = "https"
    username: str | None = Field(None, description="BMC user (default CTXPOOL_REDFISH_USERNAME).")
    password: SecretStr | None = Field(
        None, description="BMC password (default CTXPOOL_REDFISH_PASSWORD; prefer the setting)."
    )
    verify_tls: bool | None = Field(None, description="Default CTXPOOL_REDFISH_VERIFY_TLS.")
    ca_bundle: str | None = Field(None, description="Default CTXPOOL_REDFISH_CA_BUNDLE.")
    timeout_s: float = Field(30.0, gt=0, le=600, description="Per item.")

    @field_validator("system_id")
    @classmethod
    def _one_segment(cls, value: str | None) -> str | None:
        if value is not None and (not value or "/" in value or value in (".", "..")):
            raise ValueError("system_id must be one path segment")
        return value


class SystemFacts(BaseModel):
    """What the BMC says about one system."""

    id: str
    health: str | None = None
    power_state: str | None = None
    firmware: str | None = None
    firmware_source: str | None = None


def system_facts(
    system_id: str, system: dict[str, Any], manager: dict[str, Any] | None
) -> SystemFacts:
    """The facts of a ``ComputerSystem`` resource and, when read, its manager."""
    raw_status = system.get("Status")
    status: dict[str, Any] = raw_status if isinstance(raw_status, dict) else {}
    bios = system.get("BiosVersion")
    firmware, source = (str(bios), "bios") if bios else (None, None)
    if manager is not None and manager.get("FirmwareVersion"):
        firmware, source = str(manager["FirmwareVersion"]), "manager"
    return SystemFacts(
        id=system_id,
        health=_str(status.get("Health")),
        power_state=_str(system.get("PowerState")),
        firmware=firmware,
        firmware_source=source,
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def mismatches(facts: SystemFacts, params: RedfishParams) -> list[str]:
    """Every expectation ``facts`` misses, one phrase each (empty: compliant)."""
    out = []
    if params.health and facts.health not in params.health:
        out.append(f"health {facts.health} (expected {'/'.join(params.health)})")
    if params.power_state is not None and facts.power_state != params.power_state:
        out.append(f"power {facts.power_state} (expected {params.power_state})")
    if params.firmware is not None and (
        facts.firmware is None or not fnmatch.fnmatchcase(facts.firmware, params.firmware)
    ):
        out.append(f"firmware {facts.firmware} (expected {params.firmware})")
    return out


def needs_manager(system: dict[str, Any], params: RedfishParams) -> bool:
    """Whether the firmware version must be read from the system's manager."""
    if params.firmware is None:
        return False
    if params.firmware_source == "manager":
        return True
    return params.firmware_source == "auto" and not system.get("BiosVersion")


def member_ids(collection: dict[str, Any]) -> list[str]:
    """System ids of a ``ComputerSystemCollection`` (last segment of each member's path)."""
    ids = []
    for member in collection.get("Members") or []:
        path = str((member or {}).get("@odata.id", "")).rstrip("/")
        if path:
            ids.append(path.rsplit("/", 1)[-1])
    return ids


class _UnusableError(Exception):
    """The BMC cannot be checked (unreachable, refused, bad reply): an ``error`` result."""


class _Bmc:
    """GETs against one BMC with its credentials and TLS settings."""

    def __init__(self, base: str, params: RedfishParams, ctx: CheckContext) -> None:
        s = ctx.settings
        self.base = base
        self.ctx = ctx
        self.timeout_s = params.timeout_s
        user = params.username or s.redfish_username
        password = params.password or s.redfish_password
        self.user = user
        self.auth = (user, password.get_secret_value() if password else "") if user else None
        verify = s.redfish_verify_tls if params.verify_tls is None else params.verify_tls
        bundle = params.ca_bundle or s.redfish_ca_bundle
        self.verify: bool | str = bundle if (verify and bundle) else verify

    def get(self, path: str) -> dict[str, Any]:
        timeout = max(0.5, min(self.timeout_s, self.ctx.remaining_s()))
        try:
            resp = self.ctx.session.get(
                self.base + path,
                auth=self.auth,
                timeout=timeout,
                verify=self.verify,
                headers={"Accept": "application/json"},
                allow_redirects=False,  # credentials go to the BMC only
            )
        except requests.RequestException as exc:
            # type only: some requests errors quote the request, never the credentials, but
            # keep it short and safe
            raise _UnusableError(f"GET {path}: {type(exc).__name__}: {_reason(exc)}") from None
        if resp.status_code in BUSY_STATUSES:
            delay = retry_after_s(resp.headers.get("Retry-After"))
            raise Deferred(
                backoff_s(1) if delay is None else delay, f"BMC answered HTTP {resp.status_code}"
            )
        if resp.status_code in (401, 403):
            who = f"user {self.user}" if self.user else "no credentials"
            raise _UnusableError(f"GET {path}: HTTP {resp.status_code} ({who} refused)")
        if resp.status_code == 404:
            raise _UnusableError(f"GET {path}: not found")
        if resp.status_code >= 400:
            raise _UnusableError(f"GET {path}: HTTP {resp.status_code}")
        try:
            data = resp.json()
        except ValueError:
            raise _UnusableError(f"GET {path}: the reply is not JSON") from None
        if not isinstance(data, dict):
            raise _UnusableError(f"GET {path}: the reply is not a JSON object")
        return data


def _reason(exc: requests.RequestException) -> str:
    """The innermost cause of a requests error, without URLs (short, no secrets)."""
    cause: BaseException = exc
    while cause.__context__ is not None and cause.__context__ is not cause:
        cause = cause.__context__
    text = str(cause).split(": ")[-1] if str(cause) else type(cause).__name__
    return text[:200]


class RedfishHealthCheck(Check):
    """A BMC's systems: health, power state and firmware version against expected values."""

    name = "redfish-health"
    version = "1"
    params_model = RedfishParams
    limit = "redfish"
    default_timeout_s = 30.0
    description = "BMC system health, power state and firmware over Redfish (target: BMC host)"

    def limit_fields(self, target: str, params: BaseModel) -> dict[str, str]:
        """One bucket per BMC: ``host`` is the target's ``host[:port]``."""
        try:
            host = parse_target(target).authority()
        except ValueError:
            host = target
        return {"target": target, "host": host}

    def run(self, target: str, params: BaseModel, ctx: CheckContext) -> CheckResult:
        assert isinstance(params, RedfishParams)
        try:
            where = parse_target(target)
        except ValueError as exc:
            return CheckResult(result="error", summary=str(exc))
        bmc = _Bmc(f"{params.scheme}://{where.authority()}", params, ctx)
        try:
            if params.system_id is not None:
                ids = [params.system_id]
            else:
                ids = member_ids(bmc.get(SYSTEMS))
                if not ids:
                    return CheckResult(result="error", summary="the BMC lists no systems")
            facts = [self._facts(bmc, system_id, params) for system_id in ids]
        except _UnusableError as exc:
            return CheckResult(result="error", summary=str(exc))
        detail: dict[str, Any] = {"systems": {}}
        problems = []
        for fact in facts:
            missed = mismatches(fact, params)
            detail["systems"][fact.id] = {**fact.model_dump(exclude={"id"}), "mismatches": missed}
            problems += [f"{fact.id}: {m}" for m in missed]
        if problems:
            return CheckResult(result="fail", summary="; ".join(problems)[:2000], detail=detail)
        return CheckResult(
            result="pass",
            summary=", ".join(
                f"{f.id}: {f.health}, {f.power_state}"
                + (f", fw {f.firmware}" if f.firmware else "")
                for f in facts
            )[:2000],
            detail=detail,
        )

    def _facts(self, bmc: _Bmc, system_id: str, params: RedfishParams) -> SystemFacts:
        system = bmc.get(f"{SYSTEMS}/{system_id}")
        manager = None
        if needs_manager(system, params):
            managed_by = (system.get("Links") or {}).get("ManagedBy") or []
            path = str((managed_by[0] or {}).get("@odata.id", "")) if managed_by else ""
            if not path.startswith("/redfish/v1/"):
                raise _UnusableError(f"system {system_id} names no manager to read firmware from")
            manager = bmc.get(path)
        facts = system_facts(system_id, system, manager)
        if params.firmware_source == "bios" and facts.firmware_source != "bios":
            facts = facts.model_copy(update={"firmware": None, "firmware_source": None})
        return facts

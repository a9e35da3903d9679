"""``container``: run an image's command in a short-lived container on the node.

The container gets what contexts get (:mod:`pool.contexts.security`): the image allowlist
``CTXPOOL_ALLOWED_IMAGES``, no privileges, every capability dropped, ``no-new-privileges``,
memory/CPU/pids limits; plus a read-only root file system (a small tmpfs ``/tmp``) and no
network unless the params allow them. It is killed at its timeout (result ``timeout``) and
removed in every case (:mod:`pool.contexts.jobs`). The target is in ``CTXPOOL_TARGET``.

The verdict: the last line of standard output that is a JSON object with a ``result`` of
``pass``, ``fail`` or ``error`` (optionally ``summary`` and ``detail``), else the exit code
(0: pass, anything else: fail). A non-zero exit turns a JSON ``pass`` into ``fail``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pool.audits.checks import Check, CheckContext, CheckResult, Outcome
from pool.contexts.models import JobSpec, Resources
from pool.errors import EngineError, PermanentContextError

#: Env names the check sets; params cannot override them.
RESERVED_ENV = frozenset({"CTXPOOL_TARGET", "CTXPOOL_CHECK", "CTXPOOL_BATCH"})
#: How much longer than its container the item may take (create, removal).
OVERHEAD_S = 15.0


class ContainerParams(BaseModel):
    """Parameters of ``container``."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1, max_length=512, description="Within the allowlist.")
    command: list[str] | None = Field(None, description="Command (default: the image's).")
    env: dict[str, str] = Field(default_factory=dict)
    network: bool = Field(False, description="Give the container the default network.")
    read_only: bool = Field(True, description="Read-only root file system (tmpfs /tmp).")
    memory_mb: int | None = Field(None, ge=4, le=1 << 20)
    cpus: float | None = Field(None, gt=0, le=512)
    pids: int | None = Field(None, ge=8, le=1 << 22)
    timeout_s: float = Field(60.0, gt=0, le=3600, description="The container is killed after.")

    @field_validator("env")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        taken = sorted(RESERVED_ENV & set(value))
        if taken:
            raise ValueError(f"env may not set {', '.join(taken)}")
        return value


def interpret(exit_code: int, stdout: str) -> CheckResult:
    """The verdict from a finished container's exit code and standard output (pure)."""
    reported = last_json(stdout)
    detail: dict[str, Any] = {"exit_code": exit_code}
    if reported is None:
        result: Outcome = "pass" if exit_code == 0 else "fail"
        tail = stdout.strip().splitlines()[-1:] if stdout.strip() else []
        summary = f"exit {exit_code}" + (f": {tail[0][:200]}" if tail else "")
        return CheckResult(result=result, summary=summary, detail=detail)
    result = reported["result"]
    summary = str(reported.get("summary") or f"exit {exit_code}, reported {result}")
    if isinstance(reported.get("detail"), dict):
        detail["reported"] = reported["detail"]
    if exit_code != 0 and result == "pass":
        result = "fail"
        summary = f"exit {exit_code} despite reporting pass: {summary}"
    return CheckResult(result=result, summary=summary[:2000], detail=detail)


def last_json(stdout: str) -> dict[str, Any] | None:
    """The last line of ``stdout`` that is a JSON object with a valid ``result``."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("result") in ("pass", "fail", "error"):
            return data
    return None


class ContainerCheck(Check):
    """An image's command in a short-lived, locked-down container on the node."""

    name = "container"
    version = "1"
    params_model = ContainerParams
    limit = None
    default_timeout_s = 60.0
    description = "run an image's command in a short-lived container (target in CTXPOOL_TARGET)"

    def timeout_s(self, params: BaseModel) -> float:
        """The container's timeout plus room to create and remove it."""
        assert isinstance(params, ContainerParams)
        return params.timeout_s + OVERHEAD_S

    def run(self, target: str, params: BaseModel, ctx: CheckContext) -> CheckResult:
        assert isinstance(params, ContainerParams)
        # the container's own timeout ends before the item's deadline, so that the check
        # itself kills and removes it and reports timeout
        timeout_s = max(0.5, min(params.timeout_s, ctx.remaining_s() - OVERHEAD_S / 3))
        job = JobSpec(
            image=params.image,
            command=params.command,
            env={
                **params.env,
                "CTXPOOL_TARGET": target,
                "CTXPOOL_CHECK": self.name,
                "CTXPOOL_BATCH": ctx.batch,
            },
            timeout_s=timeout_s,
            network=params.network,
            read_only=params.read_only,
            resources=Resources(memory_mb=params.memory_mb, cpus=params.cpus, pids=params.pids),
            labels={"ctxpool.job-check": self.name, "ctxpool.job-batch": ctx.batch},
        )
        try:
            done = ctx.engine.run_job(job, owner=ctx.node or None)
        except PermanentContextError as exc:  # not allowed, no such image, refused
            return CheckResult(result="error", summary=str(exc)[:2000])
        except EngineError as exc:
            return CheckResult(result="error", summary=f"Docker engine: {exc}"[:2000])
        if done.timed_out or done.exit_code is None:
            return CheckResult(
                result="timeout",
                summary=f"killed after {timeout_s:g}s",
                detail={"image_id": done.image_id, "elapsed_ms": done.elapsed_ms},
            )
        verdict = interpret(done.exit_code, done.stdout)
        verdict.detail["elapsed_ms"] = done.elapsed_ms
        if done.stderr.strip() and verdict.result != "pass":
            verdict.detail["stderr"] = done.stderr.strip()[-1000:]
        return verdict

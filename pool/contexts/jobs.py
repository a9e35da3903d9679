"""One-shot job containers: run one command in a fresh container, collect its output, remove it.

Audits' ``container`` check runs through here. A job gets the same image allowlist and secure
defaults as a context (:mod:`pool.contexts.security`), plus a read-only root file system, no
network unless asked, and no restart policy. A job that outlives its timeout is killed. The
container is removed in every case (success, failure, timeout, an engine error after create);
should removal itself fail, its labels (``ctxpool.job``, ``ctxpool.job-owner``,
``ctxpool.job-expires``) let :func:`remove_stale_jobs` find it later. Jobs never carry
``ctxpool.uuid``, so context sweeps leave them alone.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import docker
import requests

from pool.contexts.artifacts import RegistryImages
from pool.contexts.dockerapi import EngineConflictError, EngineNotFoundError, engine_call
from pool.contexts.models import JobResult, JobSpec
from pool.contexts.security import check_image_allowed, secure_defaults
from pool.errors import EngineError, ImageUnavailableError, PermanentContextError
from pool.settings import Settings

log = logging.getLogger(__name__)

LABEL_JOB = "ctxpool.job"
LABEL_JOB_OWNER = "ctxpool.job-owner"
#: Unix time (s) after which a job container still present is a leftover.
LABEL_JOB_EXPIRES = "ctxpool.job-expires"
#: Slack added to a job's timeout before a sweep may call it a leftover (create, removal).
EXPIRY_SLACK_S = 300
STDOUT_KEEP_BYTES = 64 * 1024
STDERR_KEEP_BYTES = 4 * 1024
#: A job's ``/tmp`` when its root file system is read-only.
TMPFS = {"/tmp": "size=16m,mode=1777"}  # noqa: S108 - a tmpfs inside the container


def job_kwargs(
    job: JobSpec, settings: Settings, name: str, owner: str, now: float
) -> dict[str, Any]:
    """docker-py ``containers.create`` arguments of ``job`` (pure: no engine call)."""
    res = job.resources
    labels = {
        **job.labels,
        LABEL_JOB: name,
        LABEL_JOB_OWNER: owner,
        LABEL_JOB_EXPIRES: str(int(now + job.timeout_s + EXPIRY_SLACK_S)),
    }
    kwargs: dict[str, Any] = {
        "name": name,
        "labels": labels,
        "environment": dict(job.env),
        "detach": True,
        **secure_defaults(settings, res.memory_mb, res.cpus, res.pids),
        "restart_policy": {"Name": "no"},
    }
    if job.command is not None:
        kwargs["command"] = list(job.command)
    if not job.network:
        kwargs["network_mode"] = "none"
    if job.read_only:
        kwargs["read_only"] = True
        kwargs["tmpfs"] = dict(TMPFS)
    return kwargs


def run_job(
    client: docker.DockerClient,
    settings: Settings,
    job: JobSpec,
    owner: str,
    clock: Any = time.monotonic,
) -> JobResult:
    """Run ``job`` to completion or its timeout; the container is removed afterwards.

    Args:
        client: the node's Docker client.
        settings: allowlist, limits' defaults, whether absent images may be pulled.
        job: what to run.
        owner: the node's name (label, for sweeps of leftovers).
        clock: monotonic seconds (injectable for tests).

    Returns:
        Exit code (``None`` when killed at the timeout), output, elapsed time.

    Raises:
        ImageNotAllowedError: the image is outside ``CTXPOOL_ALLOWED_IMAGES`` (no container
            is created).
        ImageUnavailableError: the image is absent and cannot be pulled.
        PermanentContextError: the engine refused the container (bad command, ...).
        EngineError: the engine failed (transient).
    """
    check_image_allowed(job.image, settings)
    images = RegistryImages(client, settings)
    image = images.present(job.image)
    if image is None:
        if not settings.pull_missing_images:
            raise ImageUnavailableError(
                f"image {job.image!r} is not present and pulling is disabled"
            )
        image = images.pull(job.image)
    name = f"ctxpool-job-{secrets.token_hex(6)}"
    kwargs = job_kwargs(job, settings, name, owner, time.time())
    started = clock()
    try:
        with engine_call(f"create {name}"):
            container = client.containers.create(image.ref, **kwargs)
    except EngineNotFoundError as exc:
        raise ImageUnavailableError(f"image {job.image!r} not found: {exc}") from exc
    cid = str(container.id)
    try:
        with engine_call(f"start {name}"):
            client.api.start(cid)
        exit_code = _wait(client, cid, name, job.timeout_s - (clock() - started))
        timed_out = exit_code is None
        if timed_out:
            log.info(
                "job %s (%s): timed out after %.1fs, killing it", name, job.image, job.timeout_s
            )
            _kill(client, cid, name)
        with engine_call(f"logs {name}"):
            out = client.api.logs(cid, stdout=True, stderr=False)
            err = client.api.logs(cid, stdout=False, stderr=True, tail=200)
        return JobResult(
            container_name=name,
            image_id=image.image_id,
            exit_code=exit_code,
            timed_out=timed_out,
            stdout=out[:STDOUT_KEEP_BYTES].decode("utf-8", "replace"),
            stderr=err[-STDERR_KEEP_BYTES:].decode("utf-8", "replace"),
            elapsed_ms=round((clock() - started) * 1000, 3),
        )
    finally:
        remove_job(client, cid, name)


def _wait(client: docker.DockerClient, cid: str, name: str, remaining_s: float) -> int | None:
    """The exit code, or ``None`` when the container still runs after ``remaining_s``."""
    if remaining_s > 0:
        try:
            reply = client.api.wait(cid, timeout=max(0.1, remaining_s))
            return int(reply.get("StatusCode", -1))
        except requests.exceptions.RequestException:
            pass  # the read timed out (or the engine failed): the inspect below tells
    with engine_call(f"inspect {name}"):
        state = client.api.inspect_container(cid)["State"]
    if state.get("Running") or state.get("Status") in ("created", "running", "restarting"):
        return None
    return int(state.get("ExitCode", -1))


def _kill(client: docker.DockerClient, cid: str, name: str) -> None:
    try:
        with engine_call(f"kill {name}"):
            client.api.kill(cid)
    except (EngineNotFoundError, EngineConflictError, PermanentContextError):
        pass  # exited meanwhile (409: not running)


def remove_job(client: docker.DockerClient, cid: str, name: str) -> bool:
    """Remove a job container (forced, with its anonymous volumes); never raises.

    Returns:
        Whether it is gone (a failure is logged: :func:`remove_stale_jobs` finds it later).
    """
    for attempt in (1, 2):
        try:
            with engine_call(f"remove {name}"):
                client.api.remove_container(cid, force=True, v=True)
            return True
        except EngineNotFoundError:
            return True
        except EngineError as exc:
            if attempt == 2:
                log.warning("job %s: not removed (a sweep will find it by label): %s", name, exc)
            else:
                time.sleep(0.5)
    return False


def list_jobs(client: docker.DockerClient, owner: str | None = None) -> list[dict[str, Any]]:
    """Job containers on the engine (any state): rows of the engine's container list.

    Raises:
        EngineError: the engine failed.
    """
    labels = [LABEL_JOB] + ([f"{LABEL_JOB_OWNER}={owner}"] if owner else [])
    with engine_call("list job containers"):
        rows: list[dict[str, Any]] = client.api.containers(all=True, filters={"label": labels})
    return rows


def remove_stale_jobs(client: docker.DockerClient, owner: str, now: float | None = None) -> int:
    """Remove ``owner``'s job containers whose ``ctxpool.job-expires`` has passed (a node
    killed mid-job, a failed removal).

    Returns:
        How many were removed.

    Raises:
        EngineError: listing failed.
    """
    now = time.time() if now is None else now
    removed = 0
    for row in list_jobs(client, owner):
        labels = row.get("Labels") or {}
        try:
            expires = float(labels.get(LABEL_JOB_EXPIRES, "0"))
        except ValueError:
            expires = 0.0
        if expires <= now:
            name = (row.get("Names") or ["/?"])[0].lstrip("/")
            removed += remove_job(client, str(row["Id"]), name)
    return removed

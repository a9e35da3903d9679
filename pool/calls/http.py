"""HTTP calls to external services: request/result models and one execution step.

:func:`perform` makes one attempt and classifies it: success, permanent failure, or
:class:`~pool.limits.task.Deferred` (429, 5xx, connection errors, timeouts) with the delay the
target asked for (``Retry-After``) or a capped exponential backoff. Retrying is the limited
task's job, through its limit queue, never a countdown in worker memory.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pool.limits.task import Deferred

Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
#: Statuses worth trying again (the target is overloaded or briefly unavailable).
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: A Retry-After longer than this is capped (a misbehaving target must not park calls for days).
MAX_RETRY_AFTER_S = 3600.0
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
#: How much of a response body is kept in the call's record.
BODY_KEEP_BYTES = 64 * 1024


class HttpRequest(BaseModel):
    """One HTTP call, as a producer submits it (JSON in the task message)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    method: Method = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    params: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    timeout_s: float = Field(30.0, gt=0, le=600)
    limit: str = Field("http", description="The configured limit this call counts against.")
    max_attempts: int = Field(8, ge=1, le=100, description="Attempts including deferrals.")
    verify_tls: bool = True
    ca_bundle: str | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host/..., got {redact_query(value)!r}")
        return value

    @property
    def host(self) -> str:
        """``host`` or ``host:port`` (the default key of per-target limits)."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        return f"{host}:{parts.port}" if parts.port else host

    def key_fields(self) -> dict[str, Any]:
        parts = urlsplit(self.url)
        return {"host": self.host, "hostname": parts.hostname or "", "method": self.method}


class HttpResult(BaseModel):
    """What a call came to; recorded under ``call:<task id>`` and returned by the task."""

    task_id: str
    method: str
    url: str = Field(description="Scheme, host and path only (no query: it may hold secrets).")
    outcome: Literal["ok", "failed"]
    status: int | None = None
    attempts: int
    elapsed_ms: float | None = None
    body: str | None = None
    error: str | None = None
    finished_at: float = Field(default_factory=time.time)


def redact_query(url: str) -> str:
    """``scheme://host/path`` of a URL: drops user info, query and fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date), capped.

    Returns ``None`` when absent or unparseable.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    delta = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, delta), MAX_RETRY_AFTER_S)


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Capped exponential backoff with jitter for the ``attempt``-th failure (1-based)."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(ceiling / 2, ceiling)


_sessions = threading.local()


def _session() -> requests.Session:
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = requests.Session()
    return session


def send(
    req: HttpRequest, session: requests.Session | None = None, allow_redirects: bool = True
) -> tuple[requests.Response, float]:
    """Send ``req`` once, unclassified (no retry, no deferral): the building block of
    :func:`perform` and of audits' ``http`` check.

    Args:
        req: the call (its timeout, TLS verification and CA bundle apply).
        session: the HTTP session (default: this thread's).
        allow_redirects: follow redirects.

    Returns:
        The response (body read) and the time it took, in milliseconds.

    Raises:
        requests.RequestException: the call failed (connection, timeout, TLS, ...).
    """
    verify: bool | str = req.ca_bundle if (req.verify_tls and req.ca_bundle) else req.verify_tls
    started = time.monotonic()
    response = (session or _session()).request(
        req.method,
        req.url,
        headers=req.headers,
        params=req.params or None,
        json=req.json_body,
        timeout=req.timeout_s,
        verify=verify,
        allow_redirects=allow_redirects,
    )
    return response, (time.monotonic() - started) * 1000


def perform(req: HttpRequest, task_id: str, attempt: int) -> HttpResult:
    """Make one attempt of ``req``.

    Args:
        req: the call.
        task_id: recorded with the result.
        attempt: 1-based number of this attempt.

    Returns:
        The result: ``ok`` for 1xx-3xx, ``failed`` for other statuses that retrying cannot fix.

    Raises:
        Deferred: 408/425/429/5xx or a connection error/timeout, with the delay to wait.
    """
    try:
        response, elapsed_ms = send(req)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise Deferred(backoff_s(attempt), f"{type(exc).__name__} to {req.host}") from exc
    except requests.RequestException as exc:
        return HttpResult(
            task_id=task_id,
            method=req.method,
            url=redact_query(req.url),
            outcome="failed",
            attempts=attempt,
            error=f"{type(exc).__name__}: {exc}",
        )
    if response.status_code in RETRY_STATUSES:
        delay = retry_after_s(response.headers.get("Retry-After"))
        reason = f"HTTP {response.status_code} from {req.host}"
        if delay is not None:
            raise Deferred(delay, f"{reason}, Retry-After {delay:.1f}s")
        raise Deferred(backoff_s(attempt), reason)
    body = response.content[:BODY_KEEP_BYTES].decode(response.encoding or "utf-8", "replace")
    ok = response.status_code < 400
    return HttpResult(
        task_id=task_id,
        method=req.method,
        url=redact_query(req.url),
        outcome="ok" if ok else "failed",
        status=response.status_code,
        attempts=attempt,
        elapsed_ms=round(elapsed_ms, 3),
        body=body,
        error=None if ok else f"HTTP {response.status_code}",
    )

"""``http``: a URL's status, latency and body against expectations.

Built on the HTTP integration (:mod:`pool.calls.http`): its request model (method, headers,
timeout, TLS verification, CA bundle), one :func:`~pool.calls.http.send` per item, and its
redaction (results name the URL without user info, query or fragment, which may hold
secrets; headers never appear). Calls count against the global limit ``http`` (``per
{host}``). A 429 defers the item (the target asks to be left alone, ``Retry-After``
honoured); any other status is a verdict: a 503 where 200 is expected fails the target.
An unreachable target, a timeout or a TLS failure is ``error``.
"""

from __future__ import annotations

import re
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pool.audits.checks import Check, CheckContext, CheckResult
from pool.calls.http import (
    BODY_KEEP_BYTES,
    HttpRequest,
    Method,
    backoff_s,
    redact_query,
    retry_after_s,
    send,
)
from pool.limits.task import Deferred

#: The part of an error message from ``?`` on (a query string may hold secrets).
_QUERY_RE = re.compile(r"\?[^\s'\")]*")


class HttpParams(BaseModel):
    """Parameters of ``http``."""

    model_config = ConfigDict(extra="forbid")

    method: Method = "GET"
    expected_status: list[int] = Field(
        default_factory=lambda: [200], min_length=1, description="Acceptable statuses."
    )
    body_regex: str | None = Field(
        None, description="A regex the body must match (re.search, first 64 KiB)."
    )
    max_latency_ms: float | None = Field(None, gt=0, description="Fail when slower.")
    headers: dict[str, str] = Field(default_factory=dict, description="Never shown in results.")
    follow_redirects: bool = Field(True)
    verify_tls: bool = True
    ca_bundle: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=600)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("body_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"body_regex does not compile: {exc}") from None
        return value

    @field_validator("expected_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        if any(not 100 <= s <= 599 for s in value):
            raise ValueError("statuses are 100-599")
        return value


def request_for(url: str, params: HttpParams, timeout_s: float) -> HttpRequest:
    """The integration's request model of one check item.

    Raises:
        pydantic.ValidationError: the URL is not ``http(s)://host/...``.
    """
    return HttpRequest(
        method=params.method,
        url=url,
        headers=params.headers,
        timeout_s=timeout_s,
        verify_tls=params.verify_tls,
        ca_bundle=params.ca_bundle,
        limit="http",
        max_attempts=1,
    )


def evaluate(status: int, latency_ms: float, body: str, params: HttpParams) -> list[str]:
    """What misses the expectations (empty: pass)."""
    problems = []
    if status not in params.expected_status:
        expected = "/".join(str(s) for s in params.expected_status)
        problems.append(f"HTTP {status} (expected {expected})")
    if params.max_latency_ms is not None and latency_ms > params.max_latency_ms:
        problems.append(f"{latency_ms:.0f} ms (max {params.max_latency_ms:g})")
    if params.body_regex is not None and not re.search(params.body_regex, body):
        problems.append(f"body does not match {params.body_regex!r}")
    return problems


def safe_error(exc: BaseException) -> str:
    """``Type: message`` of a requests error with query strings cut out."""
    return f"{type(exc).__name__}: {_QUERY_RE.sub('?…', str(exc))}"[:500]


class HttpCheck(Check):
    """A URL's status, latency and body."""

    name = "http"
    version = "1"
    params_model = HttpParams
    limit = "http"
    default_timeout_s = 10.0
    description = "a URL's status, latency and body match (target: URL)"

    def limit_fields(self, target: str, params: BaseModel) -> dict[str, str]:
        """The integration's key fields (``host``, ``hostname``, ``method``)."""
        assert isinstance(params, HttpParams)
        try:
            fields = request_for(target, params, params.timeout_s).key_fields()
        except ValueError:
            return {"target": target, "host": target}
        return {"target": target, **{k: str(v) for k, v in fields.items()}}

    def run(self, target: str, params: BaseModel, ctx: CheckContext) -> CheckResult:
        assert isinstance(params, HttpParams)
        timeout_s = max(0.5, min(params.timeout_s, ctx.remaining_s()))
        try:
            req = request_for(target, params, timeout_s)
        except ValueError:
            return CheckResult(
                result="error", summary=f"not an http(s) URL: {redact_query(target)!r}"
            )
        url = redact_query(req.url)
        try:
            response, latency_ms = send(req, ctx.session, params.follow_redirects)
        except requests.RequestException as exc:
            return CheckResult(result="error", summary=safe_error(exc), detail={"url": url})
        if response.status_code == 429 and 429 not in params.expected_status:
            delay = retry_after_s(response.headers.get("Retry-After"))
            raise Deferred(backoff_s(1) if delay is None else delay, f"HTTP 429 from {req.host}")
        body = response.content[:BODY_KEEP_BYTES].decode(response.encoding or "utf-8", "replace")
        problems = evaluate(response.status_code, latency_ms, body, params)
        detail: dict[str, Any] = {
            "url": url,
            "status": response.status_code,
            "latency_ms": round(latency_ms, 1),
            "bytes": len(response.content),
        }
        if params.body_regex is not None:
            detail["body_matched"] = not any(p.startswith("body ") for p in problems)
        if problems:
            return CheckResult(result="fail", summary="; ".join(problems), detail=detail)
        return CheckResult(
            result="pass",
            summary=f"HTTP {response.status_code} in {latency_ms:.0f} ms",
            detail=detail,
        )

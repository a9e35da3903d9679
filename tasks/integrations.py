"""Integration tasks: calls to external services, each bound by a global limit.

- ``tasks.integrations.http``: one HTTP call (:class:`pool.calls.http.HttpRequest`), bound by the
  limit the request names (default ``http``, one bucket per host with the default template).
- ``tasks.integrations.drp``: one DRP API call (:class:`pool.calls.drp.DrpCall`), bound by
  ``drp-api``; the worker adds DRP's URL and credentials from its own settings.

Results are recorded under ``call:<task id>`` (see :func:`result`) and returned.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery import Celery, shared_task
from pydantic import ValidationError

from pool.appconfig import CtxpoolCelery, create_app
from pool.calls.drp import DRP_LIMIT, DrpCall, describe, send
from pool.calls.http import HttpRequest, HttpResult, perform, redact_query
from pool.drp.errors import DrpError
from pool.errors import ConfigError, CtxpoolError
from pool.limits.spec import LimitSpec
from pool.limits.task import Deferred, LimitedTask
from pool.queues import DRP_TASK, HTTP_TASK

log = logging.getLogger(__name__)


@functools.cache
def _default_app() -> CtxpoolCelery:
    return create_app()


def _app(app: Celery | None) -> Any:
    """The producer's app; by default one built from the environment (no Docker code)."""
    return app if app is not None else _default_app()


def _parse(model: type[HttpRequest] | type[DrpCall], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ConfigError(f"invalid {model.__name__}: {exc}") from exc


class _RecordingTask(LimitedTask):
    """Records every final outcome (success, failure, exhausted deferrals)."""

    def record(self, result: HttpResult) -> dict[str, Any]:
        rt = self.app.runtime
        data = result.model_dump(mode="json")
        try:
            rt.calls.put(result.task_id, result.model_dump_json(), rt.settings.call_record_ttl_s)
        except CtxpoolError as exc:
            log.warning("call %s: result not recorded: %s", result.task_id, exc)
        return data

    def failed(self, req: HttpRequest | None, error: str, attempt: int) -> dict[str, Any]:
        return self.record(
            HttpResult(
                task_id=str(self.request.id),
                method=req.method if req else "-",
                url=redact_query(req.url) if req else "-",
                outcome="failed",
                attempts=attempt,
                error=error,
            )
        )

    def finish(self, result: HttpResult) -> dict[str, Any]:
        """Log a failure, record the result; returns it without its body."""
        if result.outcome == "failed":
            log.warning("call %s %s failed: %s", result.method, result.url, result.error)
        recorded = self.record(result)
        recorded.pop("body", None)  # the return value is logged; the body is in the record
        return recorded


#: Header values shown as they are in logs and events (Flower); every other value is masked.
SAFE_HEADERS = frozenset({"accept", "content-type", "user-agent", "accept-encoding"})


def redacted_request(request: HttpRequest) -> dict[str, Any]:
    """The request as logs and task events may show it: header values and query masked."""
    data = request.model_dump(mode="json", by_alias=True, exclude={"json_body"})
    data["url"] = redact_query(request.url)
    data["headers"] = {
        k: (v if k.lower() in SAFE_HEADERS else "***") for k, v in request.headers.items()
    }
    data["params"] = dict.fromkeys(request.params, "***")
    data["json"] = "..." if request.json_body is not None else None
    return data


class HttpTask(_RecordingTask):
    limit = "http"

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        req = _parse(HttpRequest, (kwargs or {}).get("request"))
        options.setdefault("kwargsrepr", repr({"request": redacted_request(req)}))
        return super().apply_async(args, kwargs, **options)

    def resolve(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, LimitSpec, str]:
        """The request's own limit, keyed by its host (one parse for both)."""
        req: HttpRequest = _parse(HttpRequest, kwargs.get("request"))
        spec = self.app.ctxpool_settings.limits.get(req.limit)
        return req.limit, spec, spec.render_key(req.key_fields())

    def attempt_budget(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        return int(_parse(HttpRequest, kwargs.get("request")).max_attempts)

    def on_exhausted(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], deferred: Deferred
    ) -> Any:
        req = _parse(HttpRequest, kwargs.get("request"))
        log.error("call %s %s gave up: %s", req.method, redact_query(req.url), deferred)
        return self.failed(
            req, f"gave up after {self.attempt()} attempts: {deferred}", self.attempt()
        )


@shared_task(base=HttpTask, bind=True, name=HTTP_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def http(self: HttpTask, request: dict[str, Any]) -> dict[str, Any]:
    """Make one HTTP call (see :class:`pool.calls.http.HttpRequest`); 429/5xx are deferred."""
    return self.finish(perform(_parse(HttpRequest, request), str(self.request.id), self.attempt()))


class DrpTask(_RecordingTask):
    limit = DRP_LIMIT

    def limit_fields(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        call = _parse(DrpCall, kwargs.get("call"))
        return {"method": call.method, "path": call.path}

    def on_exhausted(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], deferred: Deferred
    ) -> Any:
        call = _parse(DrpCall, kwargs.get("call"))
        log.error("DRP call %s gave up: %s", describe(call), deferred)
        return self.failed(None, f"gave up: {deferred}", self.attempt())


@shared_task(base=DrpTask, bind=True, name=DRP_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def drp(self: DrpTask, call: dict[str, Any]) -> dict[str, Any]:
    """Make one DRP API call with this worker's DRP URL and token (renewed once on a 401)."""
    parsed = _parse(DrpCall, call)
    try:
        result = send(parsed, self.app.runtime.drp_tokens, str(self.request.id), self.attempt())
    except DrpError as exc:  # settings or credentials: up to the operator
        log.error("DRP call %s not made: %s", describe(parsed), exc)
        return self.failed(None, str(exc), self.attempt())
    return self.finish(result)


def submit_http(req: HttpRequest, app: Celery | None = None, **options: Any) -> str:
    """Queue one HTTP call; returns its task id (look the outcome up with :func:`result`).

    Args:
        req: the call.
        app: the producer's Celery app (default: one built from the environment).
        options: more ``apply_async`` options (``task_id``, ``expires``, ...).

    Raises:
        ConfigError: the request names an unknown limit.
    """
    task = _app(app).tasks[HTTP_TASK]
    payload = {"request": req.model_dump(mode="json", by_alias=True)}
    return str(task.apply_async(kwargs=payload, **options).id)


def submit_drp(call: DrpCall, app: Celery | None = None, **options: Any) -> str:
    """Queue one DRP API call; returns its task id."""
    task = _app(app).tasks[DRP_TASK]
    return str(task.apply_async(kwargs={"call": call.model_dump(mode="json")}, **options).id)


def result(task_id: str, app: Celery | None = None) -> HttpResult | None:
    """The recorded outcome of a call, or ``None`` while it is pending (or expired)."""
    raw = _app(app).runtime.calls.get(task_id)
    return HttpResult.model_validate_json(raw) if raw else None

"""Audit tasks (thin: validate the payload, call :mod:`pool.audits`).

- ``tasks.audits.item``: one check on one target of a batch. Items of a check bound by a global
  limit pass that limit's gate first (:class:`~pool.limits.task.LimitedTask` semantics: no
  countdown, no blocking wait in a worker); the others run at once from ``audit-<tag>``.
- ``tasks.audits.scheduled``: Celery beat's entry point of a configured schedule.

Python producers use :func:`submit` and :func:`report` (or :class:`pool.audits.service.Audits`).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery import Celery, Task, shared_task
from pydantic import ValidationError

from pool.appconfig import CtxpoolCelery, create_app
from pool.audits.checks import CheckResult
from pool.audits.models import BatchReport, ItemPayload
from pool.audits.runner import ItemRunner
from pool.audits.service import Audits, item_runner, run_schedule
from pool.errors import ConfigError
from pool.limits.gate import H_TAG
from pool.limits.task import Deferred, LimitedTask
from pool.queues import AUDIT_ITEM_TASK, AUDIT_SCHEDULED_TASK, audit_queue

log = logging.getLogger(__name__)


@functools.cache
def _default_app() -> CtxpoolCelery:
    return create_app()


def _item(kwargs: dict[str, Any]) -> ItemPayload:
    try:
        return ItemPayload.model_validate(kwargs.get("item"))
    except ValidationError as exc:
        raise ConfigError(f"invalid audit item: {exc}") from exc


class AuditItemTask(LimitedTask):
    """An audit item: limited when its check names a limit, plain otherwise."""

    def limit_name(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        limit = _item(kwargs).limit
        if not limit:
            raise ConfigError("audit item has no limit")
        return limit

    def limit_fields(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        return dict(_item(kwargs).key_fields)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        item = _item(kwargs or {})
        if item.limit is None:
            options.pop("queue", None)
            return Task.apply_async(self, args, kwargs, queue=audit_queue(item.tag), **options)
        headers = dict(options.pop("headers", None) or {})
        headers[H_TAG] = item.tag
        return super().apply_async(args, kwargs, headers=headers, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _item(kwargs).limit is None:
            return self.run(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def runner(self) -> ItemRunner:
        """This process's item runner, built once (again after the runtime's clients were
        rebuilt, e.g. in a pool process after the fork)."""
        rt = self.app.runtime
        store = rt.store
        cached = self.__dict__.get("_runner")
        if cached is not None and cached[0] is store:
            return cached[1]  # type: ignore[no-any-return]
        identity = getattr(rt, "identity", None)
        node = identity.name if identity is not None else rt.settings.node_name
        runner = item_runner(rt, node)
        self.__dict__["_runner"] = (store, runner)
        return runner

    def on_exhausted(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], deferred: Deferred
    ) -> Any:
        return self.runner().record(
            _item(kwargs),
            _gave_up(f"gave up after {self.attempt()} attempts: {deferred}"),
            0.0,
        )


def _gave_up(reason: str) -> CheckResult:
    return CheckResult(result="error", summary=reason[:2000])


@shared_task(base=AuditItemTask, bind=True, name=AUDIT_ITEM_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
def item(self: AuditItemTask, item: dict[str, Any]) -> str:
    """Run one audit item (a redelivered or already finished item is a no-op)."""
    return self.runner().run(_item({"item": item}), token=str(self.request.id))


@shared_task(bind=True, name=AUDIT_SCHEDULED_TASK, ignore_result=True, acks_late=True)  # type: ignore[untyped-decorator]
def scheduled(self: Task, name: str) -> str:
    """Create the batch of schedule ``name`` for its latest due time (idempotent)."""
    schedules = {s.name: s for s in self.app.ctxpool_settings.audit_schedules}
    if name not in schedules:
        raise ConfigError(f"no audit schedule {name!r} (CTXPOOL_AUDIT_SCHEDULES)")
    batch, created = run_schedule(self.app, schedules[name])
    log.info("schedule %s: batch %s %s", name, batch, "created" if created else "existed")
    return batch


def submit(
    check: str,
    targets: list[str],
    params: dict[str, Any] | None = None,
    tag: str = "default",
    writeback: bool = False,
    app: Celery | None = None,
) -> str:
    """Create an audit batch and enqueue its items; returns the batch id at once.

    Raises:
        ConfigError: unknown check, invalid parameters, tag or limit.
        StoreError: Redis failed.
    """
    return Audits(app if app is not None else _default_app()).submit(
        check, targets, params, tag, writeback
    )


def report(batch: str, failed_only: bool = False, app: Celery | None = None) -> BatchReport | None:
    """A batch's progress and rows (``None``: no such batch, or it expired)."""
    return Audits(app if app is not None else _default_app()).report(batch, failed_only)

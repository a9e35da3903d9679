"""The Celery application class and its configuration. Its configuration is built from
:class:`Settings` on first use, not at import time, so building an app never reads the
environment. Producers (the bridge, the CLI) build their own app with :func:`create_app`; a
node's app is :data:`pool.celery.app`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

from celery import Celery

from pool.broker import REDIS_TRANSPORT
from pool.queues import AUDIT_SCHEDULED_TASK, DEFAULT_TAG, TASK_MODULES, audit_queue, tag_queue
from pool.runtime import Runtime
from pool.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings that DESIGN.md's reliability invariants depend on."""
    default_queue = tag_queue(DEFAULT_TAG)
    transport_options: dict[str, Any] = {}
    transport = None
    if settings.broker_url.startswith(("redis://", "rediss://")):
        transport = REDIS_TRANSPORT  # survives a Redis restart with unacked messages
    if settings.broker_url.startswith(("redis", "rediss", "unix")):
        transport_options = {
            # unacked messages come back after this: longer than any task runs
            "visibility_timeout": settings.visibility_timeout_s,
            "health_check_interval": 25,
        }
    return {
        "broker_url": settings.broker_url,
        "broker_transport": transport,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_default_queue": default_queue,
        "task_default_exchange": default_queue,
        "task_default_routing_key": default_queue,
        "task_create_missing_queues": True,
        "worker_send_task_events": settings.send_events,
        "task_send_sent_event": settings.send_events,
        "worker_redirect_stdouts": False,
        "beat_schedule": beat_schedule(settings),
        "enable_utc": True,
        "timezone": "UTC",
    }


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """Celery beat entries of the configured audit schedules (``CTXPOOL_AUDIT_SCHEDULES``).

    Each fires ``tasks.audits.scheduled`` on ``audit-<tag>``; the batch id is derived from the
    schedule's name and due time, so a second beat process makes no second batch.
    """
    if not settings.audit_schedules:
        return {}
    from celery.schedules import crontab

    entries: dict[str, Any] = {}
    for sched in settings.audit_schedules:
        minute, hour, day, month, weekday = sched.crontab.split()
        entries[f"audit:{sched.name}"] = {
            "task": AUDIT_SCHEDULED_TASK,
            "schedule": crontab(minute, hour, weekday, day, month),
            "kwargs": {"name": sched.name},
            "options": {"queue": audit_queue(sched.tag), "expires": 3600},
        }
    return entries


class _LazyConfig(Mapping[str, Any]):
    """A mapping Celery reads when it first needs its configuration."""

    def __init__(self, app: CtxpoolCelery) -> None:
        self._app = app

    @cached_property
    def _data(self) -> dict[str, Any]:
        return celery_config(self._app.ctxpool_settings)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class CtxpoolCelery(Celery):  # type: ignore[misc]
    """Celery with ctxpool's settings and per-process runtime attached."""

    _settings: Settings | None = None
    _runtime: Runtime | None = None
    runtime_cls: type[Runtime] = Runtime

    @property
    def ctxpool_settings(self) -> Settings:
        """The one settings object of this process (built from the environment on first use)."""
        if self._settings is None:
            self._settings = Settings()
        return self._settings

    def use_settings(self, settings: Settings) -> None:
        """Use explicit settings (tests, embedding). Must precede the first configuration use."""
        self._settings = settings

    @property
    def runtime(self) -> Runtime:
        """This process's clients (store, limiter, publisher ...), built on first use."""
        if self._runtime is None:
            self._runtime = self.runtime_cls(self)
        return self._runtime


def create_app(runtime_cls: type[Runtime] = Runtime) -> CtxpoolCelery:
    """A ctxpool Celery app. ``runtime_cls`` adds what a node needs (the Docker engine ...);
    producers keep the default, which never loads docker-py."""
    app = CtxpoolCelery("ctxpool", include=list(TASK_MODULES), set_as_current=False)
    app.runtime_cls = runtime_cls
    app.config_from_object(_LazyConfig(app))
    return app

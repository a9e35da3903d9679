"""The Celery application. Its configuration is built from :class:`Settings` on first use,
not at import time, so importing ``pool`` never reads the environment."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

from celery import Celery

from pool.queues import DEFAULT_TAG, tag_queue
from pool.settings import Settings

TASK_MODULES = ("tasks.contexts", "tasks.integrations")
RECONCILE_TASK = "tasks.contexts.reconcile"
SWEEP_TASK = "tasks.contexts.sweep"
DRP_TASK = "tasks.integrations.drp"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings that DESIGN.md's reliability invariants depend on."""
    default_queue = tag_queue(DEFAULT_TAG)
    transport_options: dict[str, Any] = {}
    if settings.broker_url.startswith(("redis", "rediss", "unix")):
        transport_options = {
            # unacked messages come back after this: longer than any task runs
            "visibility_timeout": settings.visibility_timeout_s,
            "health_check_interval": 25,
        }
    return {
        "broker_url": settings.broker_url,
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
    }


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
    """Celery with ctxpool's settings attached."""

    _settings: Settings | None = None

    @property
    def ctxpool_settings(self) -> Settings:
        """The one settings object of this process (built from the environment on first use)."""
        if self._settings is None:
            self._settings = Settings()
        return self._settings

    def use_settings(self, settings: Settings) -> None:
        """Use explicit settings (tests, embedding). Must precede the first configuration use."""
        self._settings = settings


def create_app() -> CtxpoolCelery:
    app = CtxpoolCelery("ctxpool", include=list(TASK_MODULES), set_as_current=False)
    app.config_from_object(_LazyConfig(app))
    return app

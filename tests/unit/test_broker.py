"""The Redis transport's fix: a closed connection fails as a connection error (which kombu
handles) instead of an AttributeError (which kills the Celery worker)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import redis

from pool.appconfig import celery_config
from pool.broker import REDIS_TRANSPORT, Channel
from pool.settings import Settings


def test_a_closed_connection_is_a_connection_error() -> None:
    closed = SimpleNamespace(connection=SimpleNamespace(client=None))
    with pytest.raises(redis.ConnectionError):
        Channel._connparams(closed)  # type: ignore[arg-type]


def test_redis_brokers_use_it_and_rabbitmq_does_not() -> None:
    assert celery_config(Settings(broker_url="redis://h:6379/0"))["broker_transport"] == (
        REDIS_TRANSPORT
    )
    assert celery_config(Settings(broker_url="amqp://guest@h//"))["broker_transport"] is None

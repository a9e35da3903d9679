"""kombu's Redis transport with one fix, so that a node outlives a Redis restart.

When the Redis broker goes away while a worker holds an unacknowledged message, the consumer
closes its channel, and the channel restores the unacked messages through a connection that
is already gone: kombu raises ``AttributeError: 'NoneType' object has no attribute
'hostname'``, which Celery treats as unrecoverable, and the whole worker exits (seen here in
the Redis-restart test; kombu#582 and kombu#970 are the same family). Raised as a Redis
``ConnectionError`` instead, kombu handles it as what it is (the broker is gone: the close is
finished quietly) and the consumer reconnects. The unacked message stays in Redis for
``restore_visible`` (or went with Redis's data; the sweeps repair either way).

Celery selects it with ``broker_transport`` (see :func:`pool.appconfig.celery_config`) for
``redis://`` and ``rediss://`` broker URLs.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

#: The ``broker_transport`` setting that selects :class:`Transport`.
REDIS_TRANSPORT = "pool.broker:Transport"


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """A Redis channel whose clients fail as connection errors once their connection closed."""

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is already closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel

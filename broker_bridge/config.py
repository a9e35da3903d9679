"""The bridge's configuration (built from :class:`pool.settings.Settings` in ``main``)."""

from __future__ import annotations

from dataclasses import dataclass

from pool.drp.params import DEFAULT_BROKER, DEFAULT_ENGINE
from pool.queues import DEFAULT_TAG


@dataclass
class BridgeConfig:
    """What one bridge needs to know; units in the names.

    Attributes:
        engine: the ``Engine`` of DRP contexts this pool runs.
        default_tag: the tag of a machine that names none.
        endpoints: DRP URLs given to containers (``RS_ENDPOINTS``).
        coalesce_s: coalescing window of events for one object.
        resync_s: period of full resyncs (also one after every reconnect).
        machine_token_ttl_s: TTL of the machine tokens given to containers.
        page_size: objects per page when listing DRP.
        writers: desired-state writes running at once (threads; Redis round trips).
        drp_calls: DRP calls (machine tokens, aggregated reads) running at once.
        pages_in_flight: listed pages being compared and written while the next is listed.
        broker_name: the ``resource/broker`` of clusters this pool serves.
        backoff_base_s: first delay after a loop failed (doubles up to ``backoff_cap_s``).
        backoff_cap_s: longest delay between retries of a failing loop.
        fresh_store_wait_s: how long a resync waits when the state store is new or lost its
            data, so that nodes register again first (one membership TTL).
    """

    engine: str = DEFAULT_ENGINE
    default_tag: str = DEFAULT_TAG
    endpoints: tuple[str, ...] = ()
    coalesce_s: float = 0.25
    resync_s: float = 300.0
    machine_token_ttl_s: int = 365 * 86400
    page_size: int = 500
    writers: int = 8
    drp_calls: int = 32
    pages_in_flight: int = 4
    broker_name: str = DEFAULT_BROKER
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    fresh_store_wait_s: float = 0.0

"""Queue depth and the age of the oldest message, as the exporter shows them."""

from __future__ import annotations

import time

import pytest

from pool.appconfig import CtxpoolCelery
from pool.contexts.models import Nudge
from pool.queuestats import OldestAge
from tests import support

pytestmark = pytest.mark.integration


def test_oldest_message_age_on_redis(producer_app: CtxpoolCelery, run_id: str) -> None:
    broker = producer_app.ctxpool_settings.broker_url
    if not broker.startswith("redis"):  # not a missing service: no such figure on AMQP
        pytest.skip("the oldest message's age is read on a Redis broker only")
    queue = f"tag-{run_id}"
    oldest = OldestAge(broker)
    assert oldest(queue) is None  # empty
    rt = producer_app.runtime
    try:
        rt.publish(Nudge(uuid="a1"), queue)
        time.sleep(1.2)
        rt.publish(Nudge(uuid="a2"), queue)
        assert rt.queue_depth(queue) == 2
        age = oldest(queue)
        assert age is not None
        assert age >= 1.0  # the first message's age, not the second's
    finally:
        support.purge_queues([queue])

"""Creating a batch and publishing its items fast: one Lua call for the record, one broker
batch (kombu's ``Producer.batch``: pipelined on Redis) for the messages, never a round trip
per target.

Items of a check without a limit go to ``audit-<tag>`` (consumed by every node with the tag,
never closed by the capacity gate). Items of a check bound by a limit go to ``limit-<limit>``
with the limit's headers, exactly as :class:`~pool.limits.task.LimitedTask` would send them,
plus ``ctxpool_tag``: the admitting gate forwards them to a node with the tag.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence

from pydantic import ValidationError

from pool.audits.checks import Check, get_check
from pool.audits.models import BatchInfo, BatchSpec, ItemPayload, check_batch_id
from pool.audits.records import AuditRecords
from pool.errors import ConfigError
from pool.limits.gate import H_ATTEMPTS, H_KEY, H_LIMIT, H_TAG
from pool.queues import AUDIT_ITEM_TASK, audit_queue, limit_queue
from pool.runtime import AppLike
from pool.settings import validate_name

log = logging.getLogger(__name__)

#: Messages buffered per pipelined flush.
PUBLISH_CHUNK = 1000


def new_batch_id() -> str:
    return uuid.uuid4().hex[:20]


def batch_info(spec: BatchSpec, batch: str, check: Check | None = None) -> BatchInfo:
    """The record of a new batch (the check resolved and its parameters validated).

    Raises:
        ConfigError: unknown check, invalid parameters or tag.
    """
    check = check or get_check(spec.check)
    try:
        params = check.parse_params(spec.params)
        validate_name(spec.tag, "tag")
        check_batch_id(batch)
    except (ValidationError, ValueError) as exc:
        raise ConfigError(f"audit {spec.check}: {exc}") from exc
    return BatchInfo(
        batch=batch,
        check=check.name,
        version=check.version,
        params=params.model_dump(mode="json"),
        tag=spec.tag,
        label=spec.label,
        writeback=spec.writeback,
        timeout_s=check.timeout_s(params),
        limit=check.limit,
        total=len(spec.targets),
    )


def item_payloads(
    info: BatchInfo, targets: Sequence[tuple[int, str]], check: Check | None = None
) -> list[ItemPayload]:
    """The task payloads of some items of a batch (index, target)."""
    check = check or get_check(info.check)
    params = check.parse_params(info.params)
    return [
        ItemPayload(
            batch=info.batch,
            index=index,
            target=target,
            check=info.check,
            params=info.params,
            tag=info.tag,
            timeout_s=info.timeout_s,
            limit=info.limit,
            key_fields=check.limit_fields(target, params) if info.limit else {},
            writeback=info.writeback,
        )
        for index, target in targets
    ]


def publish_items(app: AppLike, items: Iterable[ItemPayload]) -> int:
    """Publish item messages through one producer in pipelined batches; returns the count.

    Each message is a regular Celery task message of ``tasks.audits.item`` (protocol 2, JSON).

    Raises:
        ConfigError: an item names a limit that is not configured.
        kombu/redis errors: the broker failed (items not sent are repaired by the sweep).
    """
    settings = app.ctxpool_settings
    amqp = app.amqp
    sent = 0
    with app.producer_or_acquire() as producer, producer.batch(max_size=PUBLISH_CHUNK):
        for item in items:
            task_id = str(uuid.uuid4())
            msg = amqp.as_task_v2(
                task_id,
                AUDIT_ITEM_TASK,
                args=(),
                kwargs={"item": item.model_dump(mode="json")},
                argsrepr="()",
                kwargsrepr=f"{{'batch': {item.batch!r}, 'index': {item.index}, "
                f"'target': {item.target!r}, 'check': {item.check!r}}}",
            )
            headers = dict(msg.headers)
            if item.limit:
                spec = settings.limits.get(item.limit)
                headers[H_LIMIT] = item.limit
                headers[H_KEY] = spec.render_key(item.key_fields)
                headers[H_ATTEMPTS] = 0
                headers[H_TAG] = item.tag
                queue = limit_queue(item.limit)
            else:
                queue = audit_queue(item.tag)
            producer.publish(
                msg.body,
                exchange="",
                routing_key=queue,
                serializer="json",
                headers=headers,
                delivery_mode=2,
                **msg.properties,
            )
            sent += 1
    return sent


def submit_batch(
    app: AppLike,
    records: AuditRecords,
    spec: BatchSpec,
    retention_s: int,
    batch: str | None = None,
) -> tuple[str, bool]:
    """Create a batch's record and publish its items.

    Args:
        app: the producer's Celery app.
        records: the audit records.
        spec: check, targets, parameters, tag.
        retention_s: how long the record is kept.
        batch: the batch id (default: a new random one). A batch that exists already is
            left as it is and nothing is published (idempotent: schedules rely on it).

    Returns:
        ``(batch id, created)``.

    Raises:
        ConfigError: unknown check, invalid parameters, tag or limit.
        StoreError: Redis failed.
    """
    check = get_check(spec.check)
    info = batch_info(spec, batch or new_batch_id(), check)
    if info.limit:
        app.ctxpool_settings.limits.get(info.limit)  # an unknown limit fails here
    if not records.create(info, spec.targets, retention_s):
        log.info("audit batch %s exists: not created again", info.batch)
        return info.batch, False
    publish_items(app, item_payloads(info, list(enumerate(spec.targets)), check))
    log.info(
        "audit batch %s: %s over %d targets (tag %s)",
        info.batch,
        info.check,
        len(spec.targets),
        info.tag,
    )
    return info.batch, True

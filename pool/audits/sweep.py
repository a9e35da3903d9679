"""The audit batch sweep: sends again the items of unfinished batches that are stuck.

Stuck means running for longer than the item timeout plus ``audit_grace_s`` (the worker was
``kill -9``ed, or the broker lost the message while it ran) or pending while the batch made no
progress for ``audit_pending_after_s`` (their messages were lost: an empty broker restart).
A sent-again item whose first message turns up after all is a no-op (``final`` or ``busy``).
One node per period runs it (a lease), from :class:`~pool.node.audits.AuditSweepStep`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pool.audits.checks import get_check
from pool.audits.enqueue import item_payloads
from pool.audits.models import ItemPayload
from pool.audits.records import AuditRecords
from pool.errors import ConfigError
from pool.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SweepResult:
    batches: int  # unfinished batches looked at
    resent_running: int
    resent_pending: int
    trimmed: int


def sweep_audits(
    records: AuditRecords,
    settings: Settings,
    publish: Callable[[Iterable[ItemPayload]], int],
    node: str,
) -> SweepResult | None:
    """One sweep, when this node takes the period's lease (``None``: another node has it).

    Raises:
        StoreError: Redis failed. Broker errors: publishing failed (next period tries again).
    """
    lease_s = max(settings.audit_sweep_s * 0.9, 0.5)
    if not records.lease(records.keys.audit_sweep_lease, node, lease_s):
        return None
    trimmed = records.trim_index(settings.audit_retention_s)
    unfinished = records.unfinished()
    running_n = pending_n = 0
    for info in unfinished:
        stuck = records.stuck(info, settings.audit_grace_s, settings.audit_pending_after_s)
        indexes = sorted(set(stuck.running) | set(stuck.pending))
        if not indexes:
            continue
        try:
            check = get_check(info.check)
        except ConfigError as exc:  # this node lacks the check: another node's sweep may have it
            log.warning("audit sweep: batch %s: %s", info.batch, exc)
            continue
        targets = records.targets(info.batch, indexes)
        pairs = [(i, t) for i, t in zip(indexes, targets, strict=True) if t]
        sent = publish(item_payloads(info, pairs, check))
        records.mark_resent(info.batch, sent)
        running_n += len(stuck.running)
        pending_n += len(stuck.pending)
        log.warning(
            "audit sweep: batch %s: sent %d stuck items again (%d running too long, "
            "%d pending without progress)",
            info.batch,
            sent,
            len(stuck.running),
            len(stuck.pending),
        )
    return SweepResult(len(unfinished), running_n, pending_n, trimmed)

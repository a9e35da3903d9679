"""Periodic repair: what events and nudges missed, a sweep puts right.

- The node sweep (every node, at start and every ``sweep_s``) looks at every container labelled
  as this node's and every context the store says it owns, and reconciles each: missing ones are
  created, stale ones fixed, ones it no longer owns removed.
- The pool sweep (one node per period, by lease) re-nudges contexts that wait without a live
  owner: never claimed (a lost nudge, a crash before the claim) or owned by a stalled node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pool.contexts.models import Desired, Nudge, Publisher
from pool.contexts.outcomes import Outcome
from pool.contexts.reconcile import Reconciler
from pool.errors import CtxpoolError
from pool.queues import DEFAULT_TAG, tag_queue

#: Messages waiting in a queue (``None``: cannot tell).
QueueDepth = Callable[[str], int | None]

log = logging.getLogger(__name__)

_BATCH = 500


@dataclass
class SweepReport:
    """What one sweep did, for logs and tests."""

    checked: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    renudged: int = 0
    errors: int = 0
    stale_jobs: int = 0  # audit job containers past their expiry, removed
    pool_sweep: bool = False

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome.value] = self.outcomes.get(outcome.value, 0) + 1


class Sweeper:
    """Runs both sweeps for one node."""

    def __init__(
        self, reconciler: Reconciler, publish: Publisher, queue_depth: QueueDepth | None = None
    ) -> None:
        self.reconciler = reconciler
        self.queue_depth = queue_depth
        self.store = reconciler.store
        self.engine = reconciler.engine
        self.settings = reconciler.settings
        self.node = reconciler.node
        self.publish = publish

    def sweep(self) -> SweepReport:
        """Node sweep, then the pool sweep if this node wins the period's lease.

        Raises:
            EngineError / StoreError: listing failed; nothing was changed by the failure.
        """
        report = SweepReport()
        me = self.node.name
        containers = self.engine.list_containers(owner=me)
        labelled = {ref.uuid for ref in containers if ref.uuid}
        owned = self.store.ownership.owned_by(me)
        for uuid in sorted(labelled | owned):
            report.checked += 1
            try:
                if uuid in labelled:
                    outcome = self.reconciler.drop_foreign(uuid)
                else:
                    outcome = self.reconciler.reconcile(Nudge(uuid=uuid))
                report.count(outcome)
            except CtxpoolError as exc:
                report.errors += 1
                log.warning("sweep: context %s: %s", uuid, exc)
        try:
            report.stale_jobs = self.engine.remove_stale_jobs(me)
        except CtxpoolError as exc:
            report.errors += 1
            log.warning("sweep: stale job containers: %s", exc)
        lease_ttl_s = max(self.settings.sweep_s * 0.9, 1.0)
        if self.store.locks.lease(self.store.keys.sweep_lease, me, lease_ttl_s):
            report.pool_sweep = True
            report.renudged = self.sweep_pool()
        log.info(
            "sweep: %d contexts checked %s, %d errors, pool sweep %s (%d re-nudged)",
            report.checked,
            report.outcomes,
            report.errors,
            report.pool_sweep,
            report.renudged,
        )
        return report

    def sweep_pool(self, min_age_s: float | None = None) -> int:
        """Re-nudge contexts waiting without a live owner to their tag queues.

        A tag whose queue already holds at least as many messages as it has waiting contexts
        is left alone: those nudges are not lost, only queued behind full nodes. So a long
        backlog never grows the queue by one duplicate per context and period.

        Args:
            min_age_s: skip contexts whose desired state changed more recently than this
                (their first nudge is most likely still on its way); default ``sweep_s``.

        Returns:
            How many nudges were sent.
        """
        min_age_s = self.settings.sweep_s if min_age_s is None else min_age_s
        now = time.time()
        waiting: dict[str, list[Nudge]] = {}
        batch: list[str] = []
        for uuid in self.store.iter_context_ids():
            batch.append(uuid)
            if len(batch) >= _BATCH:
                self._sweep_batch(batch, now, min_age_s, waiting)
                batch = []
        if batch:
            self._sweep_batch(batch, now, min_age_s, waiting)
        sent = 0
        for tag, nudges in sorted(waiting.items()):
            queue = tag_queue(tag)
            depth = self.queue_depth(queue) if self.queue_depth else None
            if depth is not None and depth >= len(nudges):
                log.debug(
                    "pool sweep: %d waiting for tag %s, %d queued: none lost",
                    len(nudges),
                    tag,
                    depth,
                )
                continue
            for nudge in nudges:
                self.publish(nudge, queue)
            sent += len(nudges)
        if sent:
            log.info("pool sweep: re-nudged %d contexts without a live owner", sent)
        return sent

    def _sweep_batch(
        self, uuids: list[str], now: float, min_age_s: float, waiting: dict[str, list[Nudge]]
    ) -> None:
        rows = self.store.sweep_rows(uuids)
        alive = self.store.members.alive_nodes({r.owner for r in rows if r.owner})
        for row in rows:
            if row.desired is None:
                if not row.has_status and row.owner is None:
                    self.store.forget_index_entry(row.uuid)
                continue
            if row.owner and row.owner in alive:
                continue
            if row.desired is Desired.ABSENT and row.owner is None:
                continue  # nothing runs anywhere; the tombstone expires by itself
            if row.owner is None and now - row.updated_at < min_age_s:
                continue
            nudge = Nudge(uuid=row.uuid, generation=row.generation)
            waiting.setdefault(row.tag or DEFAULT_TAG, []).append(nudge)

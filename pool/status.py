"""``ctxpool status``: one screen with nodes, contexts by state with the last errors, queue
depths and limits (also the body of ``ctxpool up``'s live summary). Reads only: the store, the
broker's queue depths, the limiter."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel

from pool.admin import describe
from pool.audits.models import BatchInfo
from pool.audits.records import AuditRecords
from pool.contexts.models import ContextStatus
from pool.contexts.store import StateStore
from pool.limits.limiter import Limiter
from pool.limits.spec import Limits
from pool.limits.view import LimitView, limit_views
from pool.membership import NodeView
from pool.queues import limit_queue, node_queue, tag_queue
from pool.textfmt import age, table

#: Errors shown (newest first).
LAST_ERRORS = 5
#: Audit batches shown (newest first).
RECENT_AUDITS = 5


class QueueDepth(BaseModel):
    queue: str
    depth: int | None  # None: the broker could not tell


class StatusReport(BaseModel):
    """Everything ``ctxpool status`` shows (``--json`` prints this)."""

    at: float
    nodes: list[NodeView]
    contexts: int
    by_state: dict[str, int]
    last_errors: list[ContextStatus]
    queues: list[QueueDepth]
    limits: list[LimitView]
    audits: list[BatchInfo] = []


def collect_status(
    store: StateStore,
    limits: Limits,
    limiter: Limiter,
    queue_depth: Callable[[str], int | None],
    now: float | None = None,
) -> StatusReport:
    """Read the pool's state.

    Raises:
        StoreError: Redis failed.
    """
    nodes = store.members.nodes()
    statuses = store.statuses(list(store.iter_context_ids()))
    by_state = Counter(s.state.value for s in statuses if s.desired is not None)
    errors = sorted(
        (s for s in statuses if s.last_error), key=lambda s: s.updated_at or 0.0, reverse=True
    )
    tags = sorted(
        {t for v in nodes if v.record for t in v.record.tags} | {s.tag for s in statuses if s.tag}
    )
    names = (
        [tag_queue(t) for t in tags]
        + [node_queue(v.name) for v in nodes if v.alive]
        + [limit_queue(name) for name in sorted(limits.specs)]
    )
    return StatusReport(
        at=time.time() if now is None else now,
        nodes=nodes,
        contexts=len(statuses),
        by_state=dict(sorted(by_state.items())),
        last_errors=errors[:LAST_ERRORS],
        queues=[QueueDepth(queue=q, depth=queue_depth(q)) for q in names],
        limits=limit_views(limits, limiter, queue_depth),
        audits=AuditRecords(store.redis, store.keys).recent(RECENT_AUDITS),
    )


def render_status(report: StatusReport) -> str:
    """The one-screen text form."""
    now = report.at
    node_rows = [
        [
            v.name,
            "alive" if v.alive else "stalled",
            describe(v.admin, now),
            ",".join(v.record.tags) if v.record else "-",
            f"{v.record.stats.running_contexts}/{v.record.stats.capacity}" if v.record else "-",
            f"{v.record.stats.load_avg[0]:.2f}" if v.record else "-",
            age(v.last_seen, now),
        ]
        for v in report.nodes
    ]
    parts = [
        "NODES",
        table(["NODE", "UP", "STATE", "TAGS", "LOAD", "LOAD1", "HEARTBEAT"], node_rows)
        if node_rows
        else "  (no node has registered)",
        "",
        f"CONTEXTS ({report.contexts}): "
        + (", ".join(f"{k} {n}" for k, n in report.by_state.items()) or "none"),
    ]
    for s in report.last_errors:
        parts.append(f"  {s.uuid} [{s.state.value}] {age(s.updated_at, now)} ago: {s.last_error}")
    parts += [
        "",
        "QUEUES  " + "  ".join(
            f"{q.queue}={'?' if q.depth is None else q.depth}" for q in report.queues
        ),
        "LIMITS  " + "  ".join(
            f"{lv.name}: {lv.definition} (waiting {lv.waiters}, in flight "
            f"{sum(b.in_flight for b in lv.buckets)})"
            for lv in report.limits
        ),
    ]  # fmt: skip
    if report.audits:
        parts += ["", "AUDITS (recent)"]
        for a in report.audits:
            counts = " ".join(
                f"{s} {a.counts.get(s, 0)}"
                for s in ("pending", "running", "pass", "fail", "error", "timeout")
            )
            parts.append(
                f"  {a.batch} {a.check} [{'complete' if a.complete else 'running'}] "
                f"{a.done}/{a.total}: {counts}  {age(a.created_at, now)} ago"
            )  # fmt: skip
    return "\n".join(parts)

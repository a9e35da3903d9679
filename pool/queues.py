"""What travels on the broker: queue names (``tag-<tag>`` per tag, ``node-<node>`` per node,
``limit-<limit>`` per limit, ``audit-<tag>`` per tag) and task names."""

from __future__ import annotations

from collections.abc import Iterable

from kombu import Exchange, Queue

TAG_PREFIX = "tag-"
NODE_PREFIX = "node-"
LIMIT_PREFIX = "limit-"
AUDIT_PREFIX = "audit-"
DEFAULT_TAG = "default"

#: Task modules every ctxpool app includes, and the task names the runtime sends.
TASK_MODULES = ("tasks.contexts", "tasks.integrations", "tasks.audits")
RECONCILE_TASK = "tasks.contexts.reconcile"
SWEEP_TASK = "tasks.contexts.sweep"
DRP_TASK = "tasks.integrations.drp"
HTTP_TASK = "tasks.integrations.http"
AUDIT_ITEM_TASK = "tasks.audits.item"
AUDIT_SCHEDULED_TASK = "tasks.audits.scheduled"


def tag_queue(tag: str) -> str:
    return f"{TAG_PREFIX}{tag}"


def node_queue(node: str) -> str:
    return f"{NODE_PREFIX}{node}"


def audit_queue(tag: str) -> str:
    """The queue of audit items for nodes with ``tag``. Unlike ``tag-<tag>``, the capacity gate
    never closes it: audit items are short and take no context slot."""
    return f"{AUDIT_PREFIX}{tag}"


def limit_queue(limit: str) -> str:
    """The queue a task bound by ``limit`` waits in until a gate admits it."""
    return f"{LIMIT_PREFIX}{limit}"


def direct_queue(name: str) -> Queue:
    """A queue with its own direct exchange, as Celery declares it when a producer names it."""
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def tags_of(queue_names: Iterable[str]) -> list[str]:
    """The tags served by a set of queue names, sorted."""
    return sorted({q[len(TAG_PREFIX) :] for q in queue_names if q.startswith(TAG_PREFIX)})

"""The node's identity and queues, fixed in the worker's main process before the pool forks."""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from pool.contexts.reconcile import NodeIdentity
from pool.limits.task import check_task_limits
from pool.node.runtime import node_runtime
from pool.queues import (
    LIMIT_PREFIX,
    audit_queue,
    direct_queue,
    node_queue,
    tag_queue,
    tags_of,
)

log = logging.getLogger(__name__)


class NodeIdentityStep(bootsteps.Step):  # type: ignore[misc]
    """Select the node's queues and fix its identity (worker blueprint).

    Queues: ``tag-<t>`` for its tags (from ``-Q`` and ``CTXPOOL_TAGS``; ``CTXPOOL_TAGS`` alone
    serves exactly those), ``audit-<t>`` for the same tags, and ``node-<name>``. A ``limit-…``
    queue on the command line is dropped with a warning: gates admit those (consuming them
    would be a busy loop).

    Raises:
        ConfigError: a registered task names a limit that is not configured.
    """

    label = "ctxpool-identity"

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        app = worker.app
        rt = node_runtime(app)
        settings = rt.settings
        queues = app.amqp.queues
        extra = [tag_queue(t) for t in settings.tags]
        if extra and not rt.cli_queues:
            queues.select([])
        for name in extra:
            queues.select_add(direct_queue(name))
        tags = tags_of(queues.consume_from)
        if not tags:
            log.warning(
                "node %s serves no tag queue: it will only run contexts forwarded to it",
                settings.node_name,
            )
        limit_queues = [name for name in queues.consume_from if name.startswith(LIMIT_PREFIX)]
        for name in limit_queues:
            log.warning("%s is admitted by the node's gate, not consumed directly", name)
        if limit_queues:
            queues.deselect(limit_queues)
        queues.select_add(direct_queue(node_queue(settings.node_name)))
        for tag in tags:  # audit items: never closed by the capacity gate
            queues.select_add(direct_queue(audit_queue(tag)))
        check_task_limits(app)
        identity = NodeIdentity(
            name=settings.node_name, tags=frozenset(tags), capacity=settings.capacity
        )
        rt.identity = identity
        log.info(
            "ctxpool node %s (incarnation %s): tags %s, capacity %d, queues %s",
            identity.name,
            identity.incarnation,
            ",".join(tags) or "-",
            identity.capacity,
            ",".join(sorted(queues.consume_from)),
        )
        super().__init__(worker, **kwargs)

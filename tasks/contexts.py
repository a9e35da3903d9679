"""Context tasks: reconcile one context, sweep one node."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from pool.celery import app
from pool.contexts.models import Nudge
from pool.errors import CtxpoolError, EngineError, StoreError
from pool.node.runtime import node_runtime
from pool.queues import RECONCILE_TASK, SWEEP_TASK

log = logging.getLogger(__name__)


@app.task(  # type: ignore[untyped-decorator]
    name=RECONCILE_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(StoreError,),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=8,
)
def reconcile(self: Any, nudge: dict[str, Any]) -> str:
    """Converge one context on its desired state (see ``pool.contexts.reconcile``)."""
    try:
        parsed = Nudge.model_validate(nudge)
    except ValidationError as exc:
        log.error("dropped malformed nudge %r: %s", nudge, exc)
        return "invalid"
    try:
        return node_runtime(self.app).reconciler.reconcile(parsed).value
    except EngineError as exc:  # expected (engine down or failing): the sweep retries
        log.warning("context %s: engine: %s; the node's sweep retries", parsed.uuid, exc)
        return "engine-error"


@app.task(name=SWEEP_TASK, bind=True, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]
def sweep(self: Any, node: str) -> dict[str, Any]:
    """Reconcile every context this node owns or has a container for (``pool.contexts.sweep``)."""
    rt = node_runtime(self.app)
    if rt.identity is None or rt.identity.name != node:
        log.warning(
            "sweep for node %s reached %s: ignored",
            node,
            rt.identity.name if rt.identity else "a non-node",
        )
        return {}
    try:
        report = rt.sweeper().sweep()
    except CtxpoolError as exc:  # Redis or the engine unreachable: the next period sweeps
        log.warning("sweep skipped: %s", exc)
        return {}
    return {"checked": report.checked, "errors": report.errors, "renudged": report.renudged}

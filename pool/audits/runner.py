"""Running one audit item on a node: start it in the record, run its check under its timeout,
record the final state once, and (optionally) write the result back to DRP.

A check runs in a thread of its own so that its timeout holds whatever the check does: when it
passes, the item is recorded as ``timeout`` and the worker moves on (the thread is left to end;
checks honour ``ctx.deadline``). A check that raises is recorded as ``error``; neither fails
the batch. :class:`~pool.limits.task.Deferred` puts the item back to pending and propagates (the
limited task sends it back through its limit queue).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from pool.audits.checks import CheckContext, CheckResult, get_check
from pool.audits.models import ItemPayload, StoredResult
from pool.audits.records import AuditRecords
from pool.calls.drp import DrpCall, set_param
from pool.errors import CtxpoolError
from pool.instruments import Instruments, instruments
from pool.limits.task import Deferred
from pool.settings import Settings

log = logging.getLogger(__name__)

#: Prefix of the DRP param a machine's result is written to: ``audit/<check>``.
WRITEBACK_PREFIX = "audit/"


def writeback_call(item: ItemPayload, result: StoredResult) -> DrpCall:
    """The DRP call that writes ``result`` to the machine's ``audit/<check>`` param."""
    value = {
        "result": result.result,
        "batch": item.batch,
        "at": result.at,
        "summary": result.summary,
        "detail": result.detail,
    }
    return set_param(item.target, f"{WRITEBACK_PREFIX}{item.check}", value)


class ItemRunner:
    """Runs audit items in one process.

    Args:
        records: the batch records.
        settings: the node's settings (retention, grace).
        node: this node's name (kept with each result).
        context: builds the :class:`CheckContext` of one item from its deadline and batch.
        send_drp: queues a DRP call through the rate-limited DRP task (``None``: results are
            not written back).
        metrics: the process's instruments.
    """

    def __init__(
        self,
        records: AuditRecords,
        settings: Settings,
        node: str,
        context: Callable[[float, str], CheckContext],
        send_drp: Callable[[DrpCall], None] | None = None,
        metrics: Instruments | None = None,
    ) -> None:
        self.records = records
        self.settings = settings
        self.node = node
        self.context = context
        self.send_drp = send_drp
        self.metrics = metrics or instruments()

    def run(self, item: ItemPayload, token: str | None = None) -> str:
        """Run one item; returns its final state, or why it did not run (``final``: it has
        its result already, ``busy``: another run is under way, ``gone``: no such batch).

        Raises:
            Deferred: the check asked to be tried later (the item is pending again).
            StoreError: Redis failed (the message is redelivered or the sweep sends it again).
        """
        token = token or uuid.uuid4().hex
        stale_after_s = item.timeout_s + self.settings.audit_grace_s
        started = self.records.start(item.batch, item.index, token, stale_after_s)
        if started != "run":
            log.info("audit %s item %d (%s): %s, skipped", item.batch, item.index, item.target,
                     started)  # fmt: skip
            return started
        began = time.monotonic()
        try:
            outcome = self._check(item, began)
        except Deferred:
            self.records.release(item.batch, item.index, token)
            raise
        return self.record(item, outcome, time.monotonic() - began)

    def record(self, item: ItemPayload, outcome: CheckResult, duration_s: float) -> str:
        """Write an item's final state (once); write it back to DRP when the batch asks."""
        stored = StoredResult(
            result=outcome.result,
            summary=outcome.summary,
            detail=outcome.detail,
            node=self.node,
            duration_s=round(duration_s, 6),
        )
        done = self.records.finish(item.batch, item.index, stored, self.settings.audit_retention_s)
        if done == 0:
            log.info("audit %s item %d already had its result", item.batch, item.index)
            return outcome.result
        self.metrics.audit_item(item.check, outcome.result, duration_s)
        if done == 2:
            log.info("audit batch %s complete", item.batch)
        if item.writeback and self.send_drp is not None:
            try:
                self.send_drp(writeback_call(item, stored))
            except (CtxpoolError, ValueError) as exc:
                log.warning("audit %s: %s not written back to DRP: %s", item.batch, item.target,
                            exc)  # fmt: skip
        return outcome.result

    def _check(self, item: ItemPayload, began: float) -> CheckResult:
        try:
            check = get_check(item.check)
            params = check.parse_params(item.params)
        except (CtxpoolError, ValidationError) as exc:
            return CheckResult(result="error", summary=f"cannot run {item.check}: {exc}")
        deadline = began + item.timeout_s
        ctx = self.context(deadline, item.batch)
        box: dict[str, Any] = {}

        def body() -> None:
            try:
                box["result"] = check.run(item.target, params, ctx)
            except BaseException as exc:  # recorded as error (or a deferral), never lost
                box["error"] = exc

        thread = threading.Thread(target=body, name=f"audit-{item.check}", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("audit %s item %d (%s): timed out after %.1fs", item.batch, item.index,
                        item.target, item.timeout_s)  # fmt: skip
            return CheckResult(result="timeout", summary=f"no result within {item.timeout_s:g}s")
        error = box.get("error")
        if isinstance(error, Deferred):
            raise error
        if error is not None:
            log.warning("audit %s item %d (%s): %s raised %s: %s", item.batch, item.index,
                        item.target, item.check, type(error).__name__, error)  # fmt: skip
            return CheckResult(
                result="error",
                summary=f"{type(error).__name__}: {error}"[:2000],
                detail={"exception": type(error).__name__},
            )
        result = box.get("result")
        if not isinstance(result, CheckResult):
            return CheckResult(
                result="error", summary=f"check returned {type(result).__name__}, not a result"
            )
        return result


def gave_up(item: ItemPayload, runner: ItemRunner, reason: str) -> str:
    """Record a limited item whose calls were deferred too often as ``error``."""
    return runner.record(item, CheckResult(result="error", summary=reason[:2000]), 0.0)

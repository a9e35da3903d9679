"""The audits' composition with a process's runtime: the producer API (:class:`Audits`), the
node's item runner (:func:`item_runner`) and scheduled runs (:func:`run_schedule`)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from pool.audits.checks import CheckContext
from pool.audits.enqueue import publish_items, submit_batch
from pool.audits.models import FINAL_STATES, BatchInfo, BatchReport, BatchSpec
from pool.audits.records import AuditRecords
from pool.audits.runner import ItemRunner
from pool.calls.drp import DrpCall
from pool.drp.rest import DrpRest
from pool.errors import ConfigError
from pool.queues import DRP_TASK
from pool.runtime import Runtime
from pool.schedule import AuditSchedule, Cron, scheduled_batch_id

log = logging.getLogger(__name__)


def records_for(rt: Runtime) -> AuditRecords:
    """The audit records on the runtime's state store."""
    return AuditRecords(rt.store.redis, rt.store.keys)


def _send_drp(rt: Runtime) -> Callable[[DrpCall], None]:
    def send(call: DrpCall) -> None:
        # LimitedTask.apply_async routes it to limit-drp-api: DRP sees the limit's rate
        rt.app.tasks[DRP_TASK].apply_async(kwargs={"call": call.model_dump(mode="json")})

    return send


def item_runner(rt: Runtime, node: str) -> ItemRunner:
    """The item runner of a process (a node's pool process, or an eager test)."""
    settings = rt.settings
    engine = getattr(rt, "engine", None)  # NodeRuntime: the Docker engine, built on first use

    def context(deadline: float, batch: str) -> CheckContext:
        return CheckContext(
            settings=settings,
            deadline=deadline,
            node=node,
            batch=batch,
            engine_provider=(lambda: rt.engine) if engine is not None else None,  # type: ignore[attr-defined]
            drp_provider=(lambda: DrpRest(rt.drp_tokens)) if settings.drp_url else None,
        )

    return ItemRunner(
        records_for(rt),
        settings,
        node,
        context,
        _send_drp(rt) if settings.drp_url else None,
    )


def machine_targets(rt: Runtime, machine_filter: str) -> list[str]:
    """UUIDs of the DRP machines matching ``machine_filter`` (DRP's query syntax, e.g.
    ``Workflow=discover&Name=Re(^web)``).

    Raises:
        DrpConfigError: DRP is not configured. DrpError: the call failed.
    """
    query = urlencode([*parse_qsl(machine_filter, keep_blank_values=True), ("slim", "Params")])
    machines = DrpRest(rt.drp_tokens).request("GET", f"/api/v3/machines?{query}") or []
    return [str(m["Uuid"]) for m in machines if isinstance(m, dict) and m.get("Uuid")]


class Audits:
    """The producer API: submit batches, read their progress and reports.

    Args:
        app: the producer's ctxpool Celery app (``pool.appconfig.create_app()``).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    @property
    def runtime(self) -> Runtime:
        rt: Runtime = self.app.runtime
        return rt

    @property
    def records(self) -> AuditRecords:
        return records_for(self.runtime)

    def submit(
        self,
        check: str,
        targets: list[str],
        params: dict[str, Any] | None = None,
        tag: str = "default",
        writeback: bool = False,
        batch: str | None = None,
        label: str = "",
    ) -> str:
        """Create a batch and enqueue its items; returns the batch id at once.

        Raises:
            ConfigError: unknown check, invalid parameters, tag or limit.
            StoreError: Redis failed.
        """
        spec = BatchSpec(
            check=check,
            targets=list(targets),
            params=params or {},
            tag=tag,
            writeback=writeback,
            label=label,
        )
        batch_id, _ = submit_batch(
            self.app, self.records, spec, self.runtime.settings.audit_retention_s, batch
        )
        return batch_id

    def info(self, batch: str) -> BatchInfo | None:
        return self.records.info(batch)

    def report(self, batch: str, failed_only: bool = False) -> BatchReport | None:
        """A batch's rows (``failed_only``: those that did not pass)."""
        report = self.records.report(batch)
        if report is not None and failed_only:
            rows = [r for r in report.rows if r.state in FINAL_STATES and r.state != "pass"]
            report = report.model_copy(update={"rows": rows})
        return report

    def recent(self, limit: int = 20) -> list[BatchInfo]:
        return self.records.recent(limit)

    def rerun(self, batch: str, failed_only: bool = True) -> str:
        """A new batch of the same check over ``batch``'s failed (or all) targets.

        Raises:
            ConfigError: no such batch, or nothing to run again.
        """
        report = self.report(batch, failed_only=failed_only)
        if report is None:
            raise ConfigError(f"no audit batch {batch}")
        targets = [r.target for r in report.rows]
        if not targets:
            raise ConfigError(f"batch {batch} has no {'failed ' if failed_only else ''}targets")
        info = report.batch
        return self.submit(
            info.check,
            targets,
            info.params,
            info.tag,
            info.writeback,
            label=f"rerun of {batch}",
        )

    def wait(
        self,
        batch: str,
        timeout_s: float | None = None,
        every_s: float = 0.5,
        progress: Callable[[BatchInfo], None] | None = None,
    ) -> BatchInfo:
        """Poll until ``batch`` completes.

        Raises:
            ConfigError: no such batch. TimeoutError: not complete within ``timeout_s``.
        """
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            info = self.info(batch)
            if info is None:
                raise ConfigError(f"no audit batch {batch}")
            if progress is not None:
                progress(info)
            if info.complete:
                return info
            if end is not None and time.monotonic() >= end:
                raise TimeoutError(f"audit batch {batch}: {info.done}/{info.total} after wait")
            time.sleep(every_s)


def run_schedule(
    app: Any, schedule: AuditSchedule, now: dt.datetime | None = None
) -> tuple[str, bool]:
    """Create the batch of ``schedule``'s latest due time (once: the id is derived from the
    schedule's name and that time, and creation is idempotent).

    Returns:
        ``(batch id, created)``.

    Raises:
        ConfigError: the schedule never fired, or its check/parameters are invalid.
        DrpError: its machine filter could not be resolved.
    """
    at = now or dt.datetime.now(dt.UTC)
    due = Cron.parse(schedule.crontab).last_due(at)
    if due is None:
        raise ConfigError(f"schedule {schedule.name} has no due time before {at:%Y-%m-%d %H:%M}")
    batch = scheduled_batch_id(schedule.name, due)
    rt: Runtime = app.runtime
    records = records_for(rt)
    if records.info(batch) is not None:
        return batch, False
    targets = list(schedule.targets)
    if schedule.machine_filter:
        targets += machine_targets(rt, schedule.machine_filter)
    spec = BatchSpec(
        check=schedule.check,
        targets=targets,
        params=schedule.params,
        tag=schedule.tag,
        writeback=schedule.writeback,
        label=f"schedule {schedule.name} {due:%Y-%m-%d %H:%M}Z",
    )
    return submit_batch(app, records, spec, rt.settings.audit_retention_s, batch)


def publisher(app: Any) -> Callable[[Any], int]:
    """``publish_items`` bound to ``app`` (what the sweep sends stuck items with)."""
    return lambda items: publish_items(app, items)

"""Audit batch sweep schedule: every ``audit_sweep_s`` one node (a lease) sends stuck items of
unfinished batches again (:mod:`pool.audits.sweep`)."""

from __future__ import annotations

import logging
from typing import Any

from pool.audits.service import publisher, records_for
from pool.audits.sweep import sweep_audits
from pool.node.periodic import PeriodicStep
from pool.node.runtime import NodeRuntime

log = logging.getLogger(__name__)


class AuditSweepStep(PeriodicStep):
    """Runs the audit sweep in the consumer's timer (a few Redis reads; publishing is one
    pipelined batch)."""

    label = "ctxpool-audit-sweep"
    loop = "audit-sweep"

    def period_s(self, rt: NodeRuntime) -> float:
        return rt.settings.audit_sweep_s

    def tick(self, consumer: Any, rt: NodeRuntime) -> None:
        identity = rt.identity
        assert identity is not None
        result = sweep_audits(records_for(rt), rt.settings, publisher(consumer.app), identity.name)
        if result is not None and (result.resent_running or result.resent_pending):
            log.info("node %s: audit sweep %s", identity.name, result)

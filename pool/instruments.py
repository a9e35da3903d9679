"""A node's own metrics, counted where the work happens: reconciles, Docker API errors, gate
waits, lease renewals and steals.

Reconciles run in Celery pool processes: children of the worker's main process with
``--pool prefork``, the main process itself with ``--pool threads``. Both are counted right by
prometheus_client's multiprocess mode: :func:`enable_multiprocess` (called once by the node in
its main process, before the pool forks) points every process of the node at one directory of
per-process files, and the main process's ``/metrics`` merges them
(:func:`node_collector`). :func:`process_exited` drops the live gauges of a pool child that
ended.

prometheus_client keeps a process's metric values process-wide (one file per pid), so the
instruments are one object per process as well, built on first use (:func:`instruments`), never
at import time; code that is tested in isolation takes an :class:`Instruments` argument
defaulting to it, and a test passes its own, on its own registry.

Metric names (all on the node's ``/metrics``):

- ``ctxpool_reconcile_duration_seconds{outcome}`` (histogram) and
  ``ctxpool_reconciles_total{outcome}``: one per handled context (a nudge, a sweep check, a
  drain hand-off), by :class:`~pool.contexts.reconcile.Outcome` value, or ``exception`` when
  Docker or Redis failed it;
- ``ctxpool_docker_errors_total{kind}``: Docker API errors at the one conversion point, by
  kind (:data:`DOCKER_ERROR_KINDS`);
- ``ctxpool_gate_wait_seconds{limit}`` (histogram): how long admitted calls waited in the
  node's gate for a token; ``ctxpool_gate_waiting{limit}``: calls the gate holds now;
- ``ctxpool_lease_renewals_total{result}``: context leases renewed while work ran, by
  ``renewed``, ``lost`` (expired or taken meanwhile), ``failed`` (Redis did not answer);
- ``ctxpool_lease_steals_total``: leases taken over from a dead holder;
- ``ctxpool_audit_item_duration_seconds{check,result}`` (histogram): wall time of one audit
  item on this node, by check and final result (pass, fail, error, timeout).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Set by :func:`enable_multiprocess`; prometheus_client's own switch.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Label values of ``ctxpool_docker_errors_total{kind}``.
DOCKER_ERROR_KINDS = ("unavailable", "not-found", "conflict", "permanent", "other")
#: ``outcome`` of a reconcile that raised (Docker or Redis failed it).
EXCEPTION_OUTCOME = "exception"
#: Label values of ``ctxpool_lease_renewals_total{result}``.
RENEWAL_RESULTS = ("renewed", "lost", "failed")

#: From a context already converged (a few Redis round trips) to an image pull.
RECONCILE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: From an idle limit (admitted at once) to a long backlog behind a slow limit.
#: From a no-op check to a slow BMC or a container check.
AUDIT_ITEM_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
GATE_WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Instruments:
    """The node's counters, histograms and gauges, on ``registry`` (a private one by default,
    never prometheus_client's global registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.reconcile_duration = Histogram(
            "ctxpool_reconcile_duration_seconds",
            "Wall time of handling one context under its lease, by outcome",
            ["outcome"],
            buckets=RECONCILE_BUCKETS_S,
            registry=self.registry,
        )
        self.reconciles = Counter(
            "ctxpool_reconciles",
            "Contexts handled (nudges, sweep checks, hand-offs), by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.docker_errors = Counter(
            "ctxpool_docker_errors",
            "Docker API errors, by kind (unavailable, not-found, conflict, permanent, other)",
            ["kind"],
            registry=self.registry,
        )
        self.gate_wait = Histogram(
            "ctxpool_gate_wait_seconds",
            "Seconds an admitted call waited in this node's gate for a token",
            ["limit"],
            buckets=GATE_WAIT_BUCKETS_S,
            registry=self.registry,
        )
        self.gate_waiting = Gauge(
            "ctxpool_gate_waiting",
            "Calls this node's gate holds, waiting for a token",
            ["limit"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.lease_renewals = Counter(
            "ctxpool_lease_renewals",
            "Context lease renewals while work ran, by result (renewed, lost, failed)",
            ["result"],
            registry=self.registry,
        )
        self.lease_steals = Counter(
            "ctxpool_lease_steals",
            "Context leases taken over from a dead holder",
            registry=self.registry,
        )
        self.audit_item_duration = Histogram(
            "ctxpool_audit_item_duration_seconds",
            "Wall time of one audit item on this node, by check and result",
            ["check", "result"],
            buckets=AUDIT_ITEM_BUCKETS_S,
            registry=self.registry,
        )
        self.declare_outcomes((EXCEPTION_OUTCOME,))
        for kind in DOCKER_ERROR_KINDS:
            self.docker_errors.labels(kind)
        for result in RENEWAL_RESULTS:
            self.lease_renewals.labels(result)

    def declare_outcomes(self, outcomes: Iterable[str]) -> None:
        """Show ``outcomes`` at 0 before they first happen (a rate over them exists from the
        start); the reconciler declares its ``Outcome`` values."""
        for outcome in outcomes:
            self.reconciles.labels(outcome)
            self.reconcile_duration.labels(outcome)

    def reconciled(self, outcome: str, duration_s: float) -> None:
        """One context handled with ``outcome`` in ``duration_s`` seconds."""
        self.reconciles.labels(outcome).inc()
        self.reconcile_duration.labels(outcome).observe(duration_s)

    def docker_error(self, kind: str) -> None:
        """One Docker API error of ``kind`` (one of :data:`DOCKER_ERROR_KINDS`)."""
        self.docker_errors.labels(kind).inc()

    def gate_admitted(self, limit: str, waited_s: float) -> None:
        """The gate of ``limit`` admitted a call after ``waited_s`` seconds."""
        self.gate_wait.labels(limit).observe(waited_s)

    def gate_holds(self, limit: str, held: int) -> None:
        """The gate of ``limit`` holds ``held`` calls now."""
        self.gate_waiting.labels(limit).set(held)

    def leases_renewed(self, result: str, count: int = 1) -> None:
        """``count`` lease renewals ended with ``result`` (one of :data:`RENEWAL_RESULTS`)."""
        if count:
            self.lease_renewals.labels(result).inc(count)

    def audit_item(self, check: str, result: str, duration_s: float) -> None:
        """One audit item of ``check`` ended with ``result`` after ``duration_s`` seconds."""
        self.audit_item_duration.labels(check, result).observe(duration_s)

    def lease_stolen(self) -> None:
        """A lease was taken over from a dead holder."""
        self.lease_steals.inc()


_lock = threading.Lock()
_instruments: Instruments | None = None


def instruments() -> Instruments:
    """This process's instruments (built on first use)."""
    global _instruments
    with _lock:
        if _instruments is None:
            _instruments = Instruments()
        return _instruments


def multiprocess_dir() -> Path | None:
    """The directory of per-process metric files, when multiprocess mode is on."""
    path = os.environ.get(MULTIPROC_ENV)
    return Path(path) if path else None


def enable_multiprocess(path: Path) -> Path:
    """Make every metric of this process and of the processes it forks from now on a file in
    ``path`` (emptied first: counts of an earlier start are not this start's).

    Call in the main process before the pool forks and before any instrument is used: values
    already counted in this process are dropped (its instruments are rebuilt).

    Raises:
        OSError: ``path`` cannot be emptied or created.
    """
    global _instruments
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    with _lock:
        os.environ[MULTIPROC_ENV] = str(path)
        # prometheus_client picks its value store when first imported, from this variable;
        # it was imported (by this package) before the node knew its directory
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        _instruments = None
    return path


def process_exited(pid: int) -> None:
    """A process of the node ended: drop its live gauges (its counts stay counted)."""
    path = multiprocess_dir()
    if path is not None:
        mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def node_collector() -> Collector:
    """What the node's ``/metrics`` serves of the instruments: the merge of every process's
    files in multiprocess mode, else this process's own registry."""
    path = multiprocess_dir()
    if path is not None:
        return MultiProcessCollector(None, str(path))  # type: ignore[no-untyped-call]
    return instruments().registry

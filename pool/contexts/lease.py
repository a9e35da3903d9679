"""Keeping per-context leases alive while work runs (DESIGN.md invariant 3).

A lease has a TTL so that a crashed worker cannot wedge its context. Work can outlast it (a
pull of a large image, a slow engine), and a second worker would then start on the same
context. So every lease held by a process is renewed by one renewer thread of that process,
every third of the TTL, in one pipelined round trip for all of them, until its holder lets
go, the same way the limiter renews concurrency slots. Each renewal is counted
(``ctxpool_lease_renewals_total{result}``: renewed, lost, failed).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from pool.contexts.store import StateStore
from pool.errors import CtxpoolError
from pool.instruments import Instruments, instruments

log = logging.getLogger(__name__)


class LeaseRenewer:
    """Renews the leases this process holds. Thread-safe; its thread starts on first use."""

    def __init__(self, store: StateStore, ttl_s: float, metrics: Instruments | None = None) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.metrics = metrics or instruments()
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}  # uuid -> token
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = 0  # leases found taken or expired at a renewal

    @contextlib.contextmanager
    def holding(self, uuid: str, token: str) -> Iterator[None]:
        """Keep the lease ``token`` on ``uuid`` alive for the duration of the block."""
        with self._lock:
            self._held[uuid] = token
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="ctxpool-lease-renewer", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                if self._held.get(uuid) == token:
                    del self._held[uuid]

    def renew_now(self) -> None:
        """One renewal round (the thread's body; tests call it directly)."""
        with self._lock:
            leases = list(self._held.items())
        if not leases:
            return
        try:
            held = self.store.locks.renew(leases, self.ttl_s)
        except CtxpoolError as exc:  # Redis trouble: the next round tries again
            self.metrics.leases_renewed("failed", len(leases))
            log.warning("could not renew %d context leases: %s", len(leases), exc)
            return
        self.metrics.leases_renewed("renewed", sum(1 for ok in held if ok))
        self.metrics.leases_renewed("lost", sum(1 for ok in held if not ok))
        for (uuid, token), ok in zip(leases, held, strict=True):
            if not ok:
                self.lost += 1
                log.warning("context %s: lease lost while working (expired or taken)", uuid)
                with self._lock:
                    if self._held.get(uuid) == token:
                        del self._held[uuid]

    def _run(self) -> None:
        while True:
            self._wake.wait(self.ttl_s / 3)
            try:
                self.renew_now()
            except Exception:  # never let the renewer die: leases would lapse silently
                log.exception("lease renewer: unexpected error (continuing)")

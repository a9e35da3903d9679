"""Supervised loops: their health, as ``/healthz`` and Prometheus metrics (DESIGN.md inv. 9).

Every long-running loop (the bridge's intake, flusher and resync; a node's heartbeat, capacity
gate, sweep schedule and limit gates) registers here. It reports each successful round
(:meth:`Health.ok`) and each exception it survived (:meth:`Health.failed`, counted as a
restart). A loop is unhealthy when it stopped, or when its last success is older than its
``stale_after_s`` (a loop that keeps failing, or hangs). ``/healthz`` answers 503 then, naming
the loop; ``/metrics`` shows restarts and the age of each loop's last success.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


@dataclass(slots=True)
class LoopState:
    """One supervised loop as it is now (monotonic times)."""

    name: str
    stale_after_s: float
    started_at: float
    last_ok: float | None = None
    last_error: str | None = None
    restarts: int = 0
    stopped: bool = False

    def problem(self, now: float) -> str | None:
        """Why this loop is unhealthy, or ``None`` when it is fine."""
        if self.stopped:
            return f"{self.name}: loop stopped"
        since = self.last_ok if self.last_ok is not None else self.started_at
        if now - since > self.stale_after_s:
            what = "no success yet" if self.last_ok is None else "last success"
            error = f" (last error: {self.last_error})" if self.last_error else ""
            return f"{self.name}: {what} {now - since:.0f}s ago > {self.stale_after_s:.0f}s{error}"
        return None


class Health:
    """Registry of supervised loops. Thread-safe; cheap enough to call on every round."""

    def __init__(self, component: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.component = component
        self.clock = clock
        self._lock = threading.Lock()
        self._loops: dict[str, LoopState] = {}

    def register(self, name: str, stale_after_s: float) -> None:
        """Start watching loop ``name`` (again: a restarted loop keeps its restart count)."""
        with self._lock:
            now = self.clock()
            state = self._loops.get(name)
            if state is None:
                self._loops[name] = LoopState(name, stale_after_s, now)
            else:
                state.stale_after_s, state.stopped = stale_after_s, False

    def unregister(self, name: str) -> None:
        """Stop watching loop ``name`` (stopped on purpose: shutdown, a consumer restart)."""
        with self._lock:
            self._loops.pop(name, None)

    def ok(self, name: str) -> None:
        """Loop ``name`` finished a round successfully."""
        with self._lock:
            state = self._loops.get(name)
            if state is not None:
                state.last_ok = self.clock()

    def failed(self, name: str, exc: BaseException) -> None:
        """Loop ``name`` survived an exception (it backs off and goes on)."""
        with self._lock:
            state = self._loops.get(name)
            if state is not None:
                state.restarts += 1
                state.last_error = f"{type(exc).__name__}: {exc}"[:300]

    def stopped(self, name: str) -> None:
        """Loop ``name`` ended although nobody stopped it (a bug: it shows until restarted)."""
        with self._lock:
            state = self._loops.get(name)
            if state is not None:
                state.stopped = True

    def loops(self) -> list[LoopState]:
        """A snapshot of every loop (copies: safe to read without the lock)."""
        with self._lock:
            return [dataclasses.replace(s) for s in self._loops.values()]

    def problems(self) -> list[str]:
        """Every unhealthy loop, one line each (empty when healthy)."""
        now = self.clock()
        return [p for s in self.loops() if (p := s.problem(now)) is not None]

    def report(self) -> dict[str, Any]:
        """The ``/healthz`` body."""
        now = self.clock()
        loops = {
            s.name: {
                "ok": s.problem(now) is None,
                "last_ok_age_s": None if s.last_ok is None else round(now - s.last_ok, 3),
                "restarts": s.restarts,
                "last_error": s.last_error,
                "stopped": s.stopped,
            }
            for s in self.loops()
        }
        problems = self.problems()
        return {"component": self.component, "healthy": not problems, "problems": problems,
                "loops": loops}  # fmt: skip


class HealthCollector(Collector):
    """Loop metrics: ``ctxpool_loop_up``, ``ctxpool_loop_restarts_total``,
    ``ctxpool_loop_last_ok_age_seconds``."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        now = self.health.clock()
        labels = ["component", "loop"]
        up = GaugeMetricFamily("ctxpool_loop_up", "1 while the loop is healthy", labels=labels)
        restarts = CounterMetricFamily(
            "ctxpool_loop_restarts", "Exceptions the loop survived (backed off)", labels=labels
        )
        age = GaugeMetricFamily(
            "ctxpool_loop_last_ok_age_seconds",
            "Seconds since the loop's last successful round (since start if none)",
            labels=labels,
        )
        for s in self.health.loops():
            key = [self.health.component, s.name]
            up.add_metric(key, 0 if s.problem(now) else 1)
            restarts.add_metric(key, s.restarts)
            age.add_metric(key, now - (s.last_ok if s.last_ok is not None else s.started_at))
        yield up
        yield restarts
        yield age


class HealthServer:
    """``/healthz`` (200 or 503, JSON) and ``/metrics`` (Prometheus) on one port, one thread."""

    def __init__(self, health: Health, registry: CollectorRegistry, port: int, addr: str) -> None:
        self.health = health
        self.registry = registry
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    report = server.health.report()
                    body = json.dumps(report, indent=1).encode()
                    self._send(200 if report["healthy"] else 503, "application/json", body)
                elif path == "/metrics":
                    body = generate_latest(server.registry)
                    self._send(200, "text/plain; version=0.0.4; charset=utf-8", body)
                else:
                    self._send(404, "text/plain", b"try /healthz or /metrics\n")

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer((addr, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name=f"ctxpool-health-{health.component}", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve_health(
    health: Health,
    port: int,
    addr: str = "0.0.0.0",  # noqa: S104
    *collectors: Collector,
) -> HealthServer | None:
    """Serve ``/healthz`` and ``/metrics`` (loop metrics plus ``collectors``) on ``port``.

    Returns ``None`` (and logs why) when the port cannot be bound: health reporting must never
    stop the component it reports on.
    """
    registry = CollectorRegistry()
    registry.register(HealthCollector(health))
    for collector in collectors:
        registry.register(collector)
    try:
        server = HealthServer(health, registry, port, addr).start()
    except OSError as exc:
        log.error("%s: /healthz and /metrics not served on :%d: %s", health.component, port, exc)
        return None
    log.info("%s: /healthz and /metrics on :%d", health.component, server.port)
    return server

"""Admission gates: the only way a rate-limited task reaches a worker pool.

A task bound by limit ``L`` is published to queue ``limit-L``. No worker consumes that queue
directly. Instead each node runs one gate per configured limit (a thread in the worker's main
process, with its own broker connection), which:

1. takes at most ``prefetch`` messages from ``limit-L`` (unacknowledged: a crash returns them);
2. asks the limiter for a token (and a concurrency slot) for each message's bucket key, sleeping
   exactly until the limiter says one is due (the limiter is shared by every node, so together
   the gates admit no more than the limit);
3. forwards an admitted message unchanged, plus an admission header, to its own node queue
   ``node-<name>`` and only then acknowledges it; the task starts there at once. A message
   that must run on a node with a tag (header ``ctxpool_tag``: audit items) goes to
   ``audit-<tag>`` instead when this node lacks that tag.

So the backlog stays in the broker, a worker process never sleeps on a token, a token is only
taken when a message is in hand (none wasted while work waits), and the node's other queues
keep flowing. See :mod:`pool.limits.task` for the task side.

Each admission is timed from the moment the gate took the message
(``ctxpool_gate_wait_seconds{limit}``), and the gate shows how many it holds
(``ctxpool_gate_waiting{limit}``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from kombu import Connection, Message, Producer

from pool.backoff import Backoff
from pool.errors import CtxpoolError
from pool.health import Health
from pool.instruments import Instruments, instruments
from pool.limits.limiter import Limiter
from pool.limits.spec import LimitSpec
from pool.queues import audit_queue, direct_queue, limit_queue, node_queue

log = logging.getLogger(__name__)

H_LIMIT = "ctxpool_limit"
H_KEY = "ctxpool_key"
H_ATTEMPTS = "ctxpool_attempts"
H_ADMITTED = "ctxpool_admitted"
#: The tag whose nodes must run the call (audit items); absent: any node.
H_TAG = "ctxpool_tag"

#: Idle polling of an empty limit queue backs off from MIN to MAX seconds.
POLL_MIN_S = 0.01
POLL_MAX_S = 0.25
#: Concurrency waits are re-checked at least this often (a release wakes no one).
SLOT_POLL_S = 0.05
#: How often the gate reports the number of messages it holds.
REPORT_S = 1.0
#: A gate whose loop made no round for this long is unhealthy (rounds take at most ~1 s).
STALE_AFTER_S = 60.0


@dataclass(slots=True)
class Held:
    """A message the gate holds while it waits for a token."""

    message: Message
    key: str
    holder: str
    due: float = 0.0  # monotonic time of the next acquire attempt
    throttled: bool = False
    since: float = 0.0  # monotonic time the gate took it


def admission_header(node: str, key: str) -> dict[str, Any]:
    return {"at": time.time(), "node": node, "key": key}


class LimitGate:
    """Admit the messages of one limit queue at the limit's global rate (one thread)."""

    def __init__(
        self,
        name: str,
        spec: LimitSpec,
        limiter: Limiter,
        broker_url: str,
        transport_options: dict[str, Any],
        node: str,
        health: Health | None = None,
        metrics: Instruments | None = None,
        tags: frozenset[str] | None = None,
    ) -> None:
        self.name = name
        #: This node's tags (``None``: unknown, every admitted call stays on this node).
        self.tags = tags
        self.spec = spec
        self.limiter = limiter
        self.broker_url = broker_url
        self.transport_options = transport_options
        self.node = node
        self.queue = direct_queue(limit_queue(name))
        self.target = direct_queue(node_queue(node))
        self.held: deque[Held] = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported_at = 0.0
        self.admitted = 0
        self.health = health or Health(f"gate-{name}")
        self.loop = f"gate-{name}"
        self.metrics = metrics or instruments()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.health.register(self.loop, STALE_AFTER_S)
        self._thread = threading.Thread(
            target=self._run, name=f"ctxpool-gate-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop admitting; held messages go back to the queue."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        try:
            while not self._stop.is_set():
                try:
                    with Connection(
                        self.broker_url, transport_options=self.transport_options
                    ) as conn:
                        conn.ensure_connection(max_retries=3)
                        backoff.reset()
                        self._serve(conn)
                except CtxpoolError as exc:
                    self.health.failed(self.loop, exc)
                    log.warning("gate %s: %s (retrying)", self.name, exc)
                except Exception as exc:  # broker down, connection reset: back off, reconnect
                    self.health.failed(self.loop, exc)
                    log.warning(
                        "gate %s: broker: %s: %s (retrying)", self.name, type(exc).__name__, exc
                    )
                if not self._stop.is_set():
                    self._stop.wait(backoff.next_s())
        finally:
            if self._stop.is_set():
                self.health.unregister(self.loop)
            else:  # ended without being told to: visible until the gate is started again
                self.health.stopped(self.loop)

    def _serve(self, conn: Connection) -> None:
        channel = conn.channel()
        queue = self.queue(channel)
        queue.declare()
        producer = Producer(channel)
        poll_s = POLL_MIN_S
        try:
            while not self._stop.is_set():
                self.health.ok(self.loop)
                got = self._fill(queue)
                wake = self._admit(producer)
                self._report()
                if got or wake == 0.0:
                    poll_s = POLL_MIN_S
                    continue
                if len(self.held) < self.spec.gate_prefetch:
                    delay = poll_s if wake is None else min(poll_s, wake)
                    poll_s = min(POLL_MAX_S, poll_s * 2)
                else:
                    delay = wake if wake is not None else POLL_MAX_S
                self._stop.wait(max(0.001, min(delay, REPORT_S)))  # report while waiting
        finally:
            self._requeue_held()
            self._report(force=True)

    # ---- the gate --------------------------------------------------------------------------

    def _fill(self, queue: Any) -> bool:
        """Take messages until ``prefetch`` are held; True when one was taken."""
        got = False
        while len(self.held) < self.spec.gate_prefetch:
            message = queue.get(no_ack=False)
            if message is None:
                break
            got = True
            if message.content_type != "application/json":
                log.error(
                    "gate %s: refused a message of content type %s (JSON only)",
                    self.name,
                    message.content_type,
                )
                message.reject(requeue=False)
                continue
            headers = message.headers or {}
            task_id = str(headers.get("id") or message.properties.get("correlation_id") or "")
            if not headers.get("task") or not task_id:
                log.error(
                    "gate %s: dropped a message that is not a Celery task (headers %s)",
                    self.name,
                    sorted(headers),
                )
                message.reject(requeue=False)
                continue
            key = str(headers.get(H_KEY) or "*")
            self.held.append(Held(message=message, key=key, holder=task_id, since=time.monotonic()))
        return got

    def _admit(self, producer: Producer) -> float | None:
        """Try every due held message; return seconds until the next is due (None: none)."""
        now = time.monotonic()
        wake: float | None = None
        for held in list(self.held):
            if held.due > now:
                wait = held.due - now
                wake = wait if wake is None else min(wake, wait)
                continue
            grant = self.limiter.acquire(self.name, held.key, self.spec, held.holder)
            if not grant.granted:
                if not held.throttled:
                    held.throttled = True
                    self.limiter.count(self.name, "throttled")
                wait = grant.wait_s
                if grant.reason == "concurrency":
                    wait = min(wait, SLOT_POLL_S)
                held.due = time.monotonic() + wait
                wake = wait if wake is None else min(wake, wait)
                continue
            try:
                self._forward(producer, held)
            except Exception:
                self.limiter.release(self.name, held.key, held.holder)
                raise
            held.message.ack()
            self.held.remove(held)
            self.admitted += 1
            self.metrics.gate_admitted(self.name, time.monotonic() - held.since)
            self.limiter.count(self.name, "granted")
            wake = 0.0
        return wake

    def _forward(self, producer: Producer, held: Held) -> None:
        message = held.message
        headers = dict(message.headers or {})
        headers[H_ADMITTED] = admission_header(self.node, held.key)
        props = message.properties or {}
        extra = {k: props[k] for k in ("correlation_id", "reply_to", "priority") if k in props}
        # Through the default exchange (routing key = queue name), as Celery sends to a named
        # queue: no exchange binding involved, so a Redis that lost its data (and kombu's
        # binding keys) cannot route an admitted call to nowhere.
        target = self.target
        tag = headers.get(H_TAG)
        if tag and self.tags is not None and tag not in self.tags:
            target = direct_queue(audit_queue(str(tag)))  # a node with that tag runs it
        producer.publish(
            message.body,
            exchange="",
            routing_key=target.name,
            declare=[target],
            headers=headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=2,
            retry=True,
            retry_policy={"max_retries": 3},
            **extra,
        )

    def _requeue_held(self) -> None:
        while self.held:
            held = self.held.popleft()
            try:
                held.message.requeue()
            except Exception as exc:  # connection gone: the broker returns it by itself
                log.info("gate %s: could not requeue %s: %s", self.name, held.holder, exc)

    def _report(self, force: bool = False) -> None:
        held, at = len(self.held), time.monotonic()
        self.metrics.gate_holds(self.name, held)
        if force or at - self._reported_at >= REPORT_S:  # one write a second, not per message
            try:
                self.limiter.report_waiting(self.name, self.node, held)
            except CtxpoolError:
                return
            self._reported_at = at

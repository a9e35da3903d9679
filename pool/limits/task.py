"""The task side of global limits: :class:`LimitedTask`.

Declare a limit on a task with ``@app.task(base=LimitedTask, limit="redfish")``. Then:

- ``apply_async``/``delay`` route the message to ``limit-<limit>`` with the limit and bucket key
  in its headers (an unknown limit or a missing key field fails here, at the producer);
- a node's gate (:mod:`pool.limits.gate`) admits it when the limiter grants a token and
  forwards it to the node's own queue, where the task runs at once;
- the task body runs only with an admission. A message that bypassed the gate, or was admitted
  but started later than the limit's ``max_lag_s`` (its node was busy), goes back to
  ``limit-<limit>`` instead of running: a late start could otherwise bunch calls.
- The body raises :class:`Deferred` to be tried again later (``429 Retry-After``, a 5xx): the
  bucket is held back for the delay (every node sees it) and the message goes back to the
  limit queue. That spends neither Celery's ``max_retries`` nor worker memory (no countdown,
  no ETA); after ``max_attempts`` the call fails for good via :meth:`LimitedTask.on_exhausted`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from pool.errors import ConfigError, CtxpoolError
from pool.limits.gate import H_ADMITTED, H_ATTEMPTS, H_KEY, H_LIMIT
from pool.limits.limiter import Limiter
from pool.limits.spec import LimitSpec
from pool.queues import limit_queue

log = logging.getLogger(__name__)


class Deferred(CtxpoolError):  # noqa: N818 - a signal, not a failure
    """Raised by a limited task's body: run me again after ``delay_s`` seconds."""

    def __init__(self, delay_s: float, reason: str) -> None:
        super().__init__(f"deferred {delay_s:.1f}s: {reason}")
        self.delay_s = delay_s
        self.reason = reason


class SlotLease:
    """Keeps a concurrency slot alive while a call runs (renewed every third of its TTL)."""

    def __init__(self, task: LimitedTask, name: str, key: str, spec: LimitSpec, holder: str):
        self.task, self.name, self.key, self.spec, self.holder = task, name, key, spec, holder
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> SlotLease:
        if self.spec.concurrency:
            self._thread = threading.Thread(target=self._renew, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.spec.concurrency:
            try:
                self.task.limiter.release(self.name, self.key, self.holder)
            except CtxpoolError as err:  # the lease expires by itself
                log.warning("could not release a %s slot: %s", self.name, err)

    def _renew(self) -> None:
        while not self._stop.wait(self.spec.slot_ttl_s / 3):
            try:
                if not self.task.limiter.renew(self.name, self.key, self.spec, self.holder):
                    log.warning("task %s lost its %s slot (lease expired)", self.holder, self.name)
                    return
            except CtxpoolError as err:
                log.warning("could not renew a %s slot: %s", self.name, err)


class LimitedTask(Task):  # type: ignore[misc]
    """A Celery task that runs only when its global limit admits it."""

    #: The configured limit this task is bound by.
    limit: str | None = None
    #: Deferrals (429/5xx) before the call fails for good.
    max_attempts: int = 8
    acks_late = True
    reject_on_worker_lost = True

    # ---- hooks a task may override --------------------------------------------------------

    def limit_name(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The limit of one call (default: the task's ``limit``)."""
        if not self.limit:
            raise ConfigError(f"task {self.name} has base=LimitedTask but no limit")
        return self.limit

    def limit_fields(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Fields the limit's key template may use (default: the scalar keyword arguments)."""
        return {k: v for k, v in kwargs.items() if isinstance(v, str | int | float)}

    def attempt_budget(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        """Attempts (first call plus deferrals) one call gets (default ``max_attempts``)."""
        return self.max_attempts

    def attempt(self) -> int:
        """1-based number of the attempt now running (deferrals so far + 1)."""
        return int(self._header(H_ATTEMPTS) or 0) + 1

    def on_exhausted(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], deferred: Deferred
    ) -> Any:
        """Called once when a call was deferred ``max_attempts`` times; its value is returned."""
        log.error("task %s[%s] gave up: %s", self.name, self.request.id, deferred)
        return None

    # ---- plumbing ----------------------------------------------------------------------------

    @property
    def limiter(self) -> Limiter:
        limiter: Limiter = self.app.runtime.limiter
        return limiter

    def resolve(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, LimitSpec, str]:
        """``(limit name, spec, bucket key)`` of one call.

        Raises:
            ConfigError: unknown limit, or the key template needs a field the call lacks.
        """
        name = self.limit_name(args, kwargs)
        spec = self.app.ctxpool_settings.limits.get(name)
        return name, spec, spec.render_key(self.limit_fields(args, kwargs))

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send the call to its limit queue (validated here, at the producer).

        Raises:
            ConfigError: see :meth:`resolve`.
        """
        call_args, call_kwargs = tuple(args or ()), dict(kwargs or {})
        name, _spec, key = self.resolve(call_args, call_kwargs)
        headers = dict(options.pop("headers", None) or {})
        headers.pop(H_ADMITTED, None)
        headers.setdefault(H_ATTEMPTS, 0)
        headers[H_LIMIT], headers[H_KEY] = name, key
        for routing in ("exchange", "routing_key", "queue"):
            options.pop(routing, None)
        return super().apply_async(
            call_args, call_kwargs, headers=headers, queue=limit_queue(name), **options
        )

    def _header(self, name: str) -> Any:
        value = getattr(self.request, name, None)
        if value is None:
            value = (self.request.headers or {}).get(name)
        return value

    def _send_back(self, args: tuple[Any, ...], kwargs: dict[str, Any], attempts: int) -> None:
        """Put this call back in its limit queue (same task id); the current message is acked."""
        self.apply_async(args, kwargs, task_id=self.request.id, headers={H_ATTEMPTS: attempts})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or request.is_eager:
            return self.run(*args, **kwargs)
        name, spec, key = self.resolve(args, kwargs)
        attempts = int(self._header(H_ATTEMPTS) or 0)
        admitted = self._header(H_ADMITTED)
        if not isinstance(admitted, dict) or "at" not in admitted:
            log.warning(
                "task %s[%s] arrived without admission by the %s gate: sent to %s",
                self.name,
                request.id,
                name,
                limit_queue(name),
            )
            self._send_back(args, kwargs, attempts)
            raise Ignore()
        holder = str(request.id)
        lag_s = time.time() - float(admitted["at"])
        if lag_s > spec.max_lag_s:
            log.info(
                "task %s[%s] started %.3fs after admission (> %.3fs): back to %s",
                self.name,
                holder,
                lag_s,
                spec.max_lag_s,
                limit_queue(name),
            )
            self.limiter.count(name, "stale")
            if spec.concurrency:
                self.limiter.release(name, key, holder)
            self._send_back(args, kwargs, attempts)
            raise Ignore()
        with SlotLease(self, name, key, spec, holder):
            try:
                return self.run(*args, **kwargs)
            except Deferred as deferred:
                attempts += 1
                budget = self.attempt_budget(args, kwargs)
                if attempts >= budget:
                    self.limiter.count(name, "failed")
                    return self.on_exhausted(args, kwargs, deferred)
                log.info(
                    "task %s[%s] %s (attempt %d/%d)",
                    self.name,
                    holder,
                    deferred,
                    attempts,
                    budget,
                )
                self.limiter.penalize(name, key, spec, deferred.delay_s)
                self.limiter.count(name, "deferred")
                self._send_back(args, kwargs, attempts)
                raise Ignore() from None


def check_task_limits(app: Any) -> None:
    """Fail at worker start when a registered task names a limit that is not configured.

    Raises:
        ConfigError: naming every offending task.
    """
    limits = app.ctxpool_settings.limits
    bad = [
        f"{task.name} (limit {task.limit!r})"
        for task in app.tasks.values()
        if isinstance(task, LimitedTask) and task.limit and task.limit not in limits.specs
    ]
    if bad:
        raise ConfigError(
            f"tasks name limits that are not configured: {', '.join(sorted(bad))}; "
            f"configured: {', '.join(limits.names())} (CTXPOOL_LIMITS)"
        )

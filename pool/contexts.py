"""The Python API the bridge and tests use: write desired state, send the nudge.

    from pool import app, contexts
    contexts.apply(spec)            # create or update
    contexts.remove(uuid)           # delete
    contexts.status(uuid)           # desired + observed state

A nudge goes to the live owner's ``node-<owner>`` queue, else to ``tag-<tag>`` where the first
free node with that tag claims it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pool.celery_app import CtxpoolCelery
from pool.models import ContextSpec, ContextStatus, Desired, Nudge
from pool.queues import DEFAULT_TAG, node_queue, tag_queue
from pool.reconcile import Publisher
from pool.runtime import runtime
from pool.store import StateStore


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What a desired-state write did."""

    uuid: str
    generation: int
    changed: bool
    queue: str


class ContextAPI:
    """Desired-state writes plus nudges, over an injected store and publisher."""

    def __init__(self, store: StateStore, publish: Publisher) -> None:
        self.store = store
        self.publish = publish

    def apply(self, spec: ContextSpec, generation: int | None = None) -> ApplyResult:
        """Make ``spec`` the desired state of its context and nudge the pool.

        Args:
            spec: the context to run.
            generation: an ordered writer's own generation (e.g. DRP's); older writes are
                ignored. ``None`` lets the store count generations.

        Raises:
            StoreError: Redis is unreachable; nothing was changed.
        """
        gen, changed = self.store.put_desired(spec.uuid, Desired.PRESENT, spec, generation)
        queue = self._queue(spec.uuid, spec.tag)
        self.publish(Nudge(uuid=spec.uuid, generation=gen), queue)
        return ApplyResult(spec.uuid, gen, changed, queue)

    def remove(self, uuid: str, generation: int | None = None) -> ApplyResult:
        """Make ``uuid`` absent: its container is removed wherever it runs.

        Raises:
            StoreError: Redis is unreachable; nothing was changed.
        """
        gen, changed = self.store.put_desired(uuid, Desired.ABSENT, None, generation)
        current = self.store.status(uuid)
        queue = self._queue(uuid, current.tag or DEFAULT_TAG)
        self.publish(Nudge(uuid=uuid, generation=gen), queue)
        return ApplyResult(uuid, gen, changed, queue)

    def status(self, uuid: str) -> ContextStatus:
        return self.store.status(uuid)

    def list(self) -> list[ContextStatus]:
        """Status of every context the store knows, tombstones included."""
        return self.store.statuses(list(self.store.iter_context_ids()))

    def _queue(self, uuid: str, tag: str) -> str:
        owner = self.store.owner(uuid)
        if owner and self.store.is_alive(owner):
            return node_queue(owner)
        return tag_queue(tag)


def _api(app: CtxpoolCelery | None) -> ContextAPI:
    if app is None:
        from pool import app as default_app

        app = default_app
    return runtime(app).api


def apply(
    spec: ContextSpec, generation: int | None = None, *, app: CtxpoolCelery | None = None
) -> ApplyResult:
    """:meth:`ContextAPI.apply` on ``app`` (default: ``pool.app``)."""
    return _api(app).apply(spec, generation)


def remove(
    uuid: str, generation: int | None = None, *, app: CtxpoolCelery | None = None
) -> ApplyResult:
    """:meth:`ContextAPI.remove` on ``app`` (default: ``pool.app``)."""
    return _api(app).remove(uuid, generation)


def status(uuid: str, *, app: CtxpoolCelery | None = None) -> ContextStatus:
    """:meth:`ContextAPI.status` on ``app`` (default: ``pool.app``)."""
    return _api(app).status(uuid)

"""The producer API the bridge and tests use: write desired state, send the nudge.

    from pool.appconfig import create_app
    api = create_app().runtime.api
    api.apply(spec)                 # create or update
    api.remove(uuid)                # delete
    api.status(uuid)                # desired + observed state

A nudge goes to the live owner's ``node-<owner>`` queue, else to ``tag-<tag>`` where the first
free node with that tag claims it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pool.contexts import placement
from pool.contexts.models import (
    BatchPublisher,
    ContextSpec,
    ContextStatus,
    Desired,
    Nudge,
    Publisher,
)
from pool.contexts.store import StateStore
from pool.queues import DEFAULT_TAG


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What a desired-state write did."""

    uuid: str
    generation: int
    changed: bool
    queue: str


class ContextAPI:
    """Desired-state writes plus nudges, over an injected store and publisher."""

    def __init__(
        self, store: StateStore, publish: Publisher, publish_many: BatchPublisher | None = None
    ) -> None:
        """Args:
        store: the state store.
        publish: sends one nudge.
        publish_many: sends many nudges as one broker batch; default: one ``publish`` each.
        """
        self.store = store
        self.publish = publish
        self.publish_many: BatchPublisher = publish_many or self._publish_each

    def _publish_each(self, nudges: Sequence[tuple[Nudge, str]]) -> None:
        for nudge, queue in nudges:
            self.publish(nudge, queue)

    def apply(
        self, spec: ContextSpec, generation: int | None = None, preferred: str | None = None
    ) -> ApplyResult:
        """Make ``spec`` the desired state of its context and nudge the pool.

        Args:
            spec: the context to run.
            generation: an ordered writer's own generation (e.g. DRP's); older writes are
                ignored. ``None`` lets the store count generations.
            preferred: a node that should take the context if it is unowned (DRP names it, or
                the context broker spread it there); only a hint, see :mod:`placement`.

        Raises:
            StoreError: Redis is unreachable; nothing was changed.
        """
        gen, changed = self.store.put_desired(
            spec.uuid, Desired.PRESENT, spec, generation, preferred=preferred
        )
        queue = self._queue(spec.uuid, spec.tag, preferred)
        self.publish(Nudge(uuid=spec.uuid, generation=gen), queue)
        return ApplyResult(spec.uuid, gen, changed, queue)

    def apply_many(self, applies: Sequence[tuple[ContextSpec, str | None]]) -> list[ApplyResult]:
        """:meth:`apply` (store-counted generations) for many specs in a few round trips: one
        pipelined write of every spec, one read of their owners, one broker batch of nudges.

        Args:
            applies: ``(spec, preferred node or None)`` each.

        Raises:
            StoreError: Redis is unreachable; some writes may have happened (a retry is
                harmless: writes are idempotent).
        """
        if not applies:
            return []
        written = self.store.put_desired_many(applies)
        owners = self.store.ownership.owners([spec.uuid for spec, _ in applies])
        alive = self.store.members.alive_nodes({o for o in owners.values() if o})
        records = {p: self.store.members.membership(p) for p in {p for _, p in applies if p}}
        results, nudges = [], []
        for (spec, preferred), (generation, changed) in zip(applies, written, strict=True):
            owner = owners.get(spec.uuid)
            open_ = None
            if not owner and preferred and placement.can_host(records[preferred], spec.tag):
                open_ = preferred
            queue = placement.nudge_queue(spec.tag, owner, owner in alive, open_)
            nudges.append((Nudge(uuid=spec.uuid, generation=generation), queue))
            results.append(ApplyResult(spec.uuid, generation, changed, queue))
        self.publish_many(nudges)
        return results

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

    def _queue(self, uuid: str, tag: str, preferred: str | None = None) -> str:
        owner = self.store.ownership.owner(uuid)
        owner_alive = bool(owner) and self.store.members.is_alive(owner or "")
        open_ = None
        if not owner and preferred:
            record = self.store.members.membership(preferred)
            open_ = preferred if placement.can_host(record, tag) else None
        return placement.nudge_queue(tag, owner, owner_alive, open_)

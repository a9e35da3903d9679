"""Where the bridge's desired state goes: the :class:`Sink` interface, and :class:`PoolSink`,
the pool's state store and producer API behind it.

The bridge only writes desired state and names a *preferred* node; it never claims a context
(DESIGN.md invariant 8). Reads come in batches (one store round trip per listed page), so a
resync of 10,000 unchanged machines costs 20 round trips, not 10,000.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from pool.contexts import placement
from pool.contexts.api import ContextAPI
from pool.contexts.models import ContextSpec, Desired, Nudge
from pool.contexts.placement import NodeLoads
from pool.contexts.store import StateStore
from pool.queues import DEFAULT_TAG

log = logging.getLogger(__name__)


def fingerprint(context: str, image: str, tag: str) -> str:
    """What must match for a stored spec to be up to date (the token is not part of it)."""
    return f"{context}|{image}|{tag}"


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store holds for one context, as far as the bridge compares it."""

    present: bool
    fingerprint: str | None  # of the stored spec (None: absent or unreadable)
    owner: str | None
    owner_alive: bool
    tag: str | None
    generation: int

    @property
    def stalled(self) -> bool:
        """Wanted, owned, and its owner's heartbeat expired: the tag's nodes should take it."""
        return self.present and self.owner is not None and not self.owner_alive


class Sink(Protocol):
    """The bridge's output (synchronous: the bridge calls it from worker threads).

    Every method may raise :class:`~pool.errors.StoreError` (store unreachable).
    """

    def current_many(self, uuids: Sequence[str]) -> dict[str, Stored]:
        """What the store holds for each of ``uuids`` (unknown ones are left out)."""
        ...

    def present_except(self, keep: Collection[str]) -> set[str]:
        """Every context the store wants present, other than ``keep``."""
        ...

    def apply(self, spec: ContextSpec, preferred: str | None) -> None:
        """Make ``spec`` desired; ``preferred`` is a node to suggest (a hint, never a claim)."""
        ...

    def remove(self, uuid: str) -> None:
        """Make ``uuid``'s context absent."""
        ...

    def renudge(self, stalled: Sequence[tuple[str, Stored]]) -> int:
        """Send contexts of stalled nodes to their tag's queue; returns how many."""
        ...

    def live_nodes(self, tag: str) -> NodeLoads:
        """Live nodes serving ``tag``: name -> (contexts they run, capacity)."""
        ...

    def resync_completed(self, started_at: float) -> None:
        """Record that a resync started at ``started_at`` (unix s) wrote every context DRP
        wants (nodes then know that an orphan older than that is gone from DRP)."""
        ...


class PoolSink:
    """:class:`Sink` on the pool's :class:`StateStore` and :class:`ContextAPI` (thread-safe)."""

    def __init__(self, store: StateStore, api: ContextAPI) -> None:
        self.store = store
        self.api = api

    def current_many(self, uuids: Sequence[str]) -> dict[str, Stored]:
        """Raises: StoreError."""
        digests = self.store.desired_digests(uuids)
        owners = {d.owner for d in digests.values() if d.owner}
        alive = self.store.members.alive_nodes(owners) if owners else set()
        out = {}
        for uuid, d in digests.items():
            present = d.desired is Desired.PRESENT
            readable = present and d.context and d.image and d.tag
            out[uuid] = Stored(
                present=present,
                fingerprint=fingerprint(d.context, d.image, d.tag)  # type: ignore[arg-type]
                if readable
                else None,
                owner=d.owner,
                owner_alive=d.owner in alive,
                tag=d.tag,
                generation=d.generation,
            )
        return out

    def present_except(self, keep: Collection[str]) -> set[str]:
        """Raises: StoreError."""
        keep = set(keep)
        candidates = [u for u in self.store.context_ids() if u not in keep]
        digests = self.store.desired_digests(candidates)
        return {u for u, d in digests.items() if d.desired is Desired.PRESENT}

    def apply(self, spec: ContextSpec, preferred: str | None) -> None:
        """Raises: StoreError."""
        self.api.apply(spec, preferred=preferred)

    def remove(self, uuid: str) -> None:
        """Raises: StoreError."""
        self.api.remove(uuid)

    def renudge(self, stalled: Sequence[tuple[str, Stored]]) -> int:
        """Nudge contexts whose owner stopped heartbeating to their tag queue, where a live
        node of the tag takes them over (the pool's sweep does the same from the node side).

        Raises:
            StoreError, or the broker's error when a nudge cannot be sent.
        """
        for uuid, s in stalled:
            queue = placement.nudge_queue(s.tag or DEFAULT_TAG, s.owner, False, None)
            self.api.publish(Nudge(uuid=uuid, generation=s.generation), queue)
        if stalled:
            log.info("resync: %d contexts of stalled nodes sent to their tag queues", len(stalled))
        return len(stalled)

    def live_nodes(self, tag: str) -> NodeLoads:
        """Raises: StoreError."""
        return {
            view.name: (self.store.count_owned(view.name), view.record.stats.capacity)
            for view in self.store.members.nodes()
            if view.alive and view.record is not None and tag in view.record.tags
        }

    def resync_completed(self, started_at: float) -> None:
        """Raises: StoreError."""
        self.store.resync_completed(started_at)


__all__ = ["PoolSink", "Sink", "Stored", "fingerprint"]

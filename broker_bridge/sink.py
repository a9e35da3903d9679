"""Where the bridge's desired state goes: the :class:`Sink` interface, and :class:`PoolSink`,
the pool's state store and producer API behind it.

The bridge only writes desired state and names a *preferred* node; it never claims a context
(DESIGN.md invariant 8). Reads come in batches: the store compares a whole listed page with
what the bridge expects in one round trip and answers only with what differs, so a resync of
10,000 unchanged machines costs 20 small round trips, not 10,000.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from pool.contexts import placement
from pool.contexts.api import ContextAPI
from pool.contexts.models import ContextSpec, Desired, Nudge
from pool.contexts.placement import NodeLoads, offerable
from pool.contexts.store import DesiredDigest, StateStore
from pool.queues import DEFAULT_TAG

log = logging.getLogger(__name__)


#: What must match for a stored spec to be up to date: (context, image, tag). The token is
#: not part of it (a renewed token alone must not restart an agent).
Target = tuple[str, str, str]


def fingerprint(context: str, image: str, tag: str) -> str:
    """A :data:`Target` as one string (logs, tests)."""
    return f"{context}|{image}|{tag}"


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store holds for one context, as far as the bridge compares it."""

    present: bool
    fingerprint: str | None  # of the stored spec (None: absent or unreadable)
    tag: str | None
    generation: int


class Sink(Protocol):
    """The bridge's output (synchronous: the bridge calls it from worker threads).

    Every method may raise :class:`~pool.errors.StoreError` (store unreachable).
    """

    def compare(self, expected: Sequence[tuple[str, Target | None]]) -> dict[str, Stored | None]:
        """What the store holds for each context of ``expected`` (``(uuid, target)``; target
        None: no container wanted) that is not as expected; None when the store has no
        record. Contexts as expected are left out."""
        ...

    def present_except(self, keep: Collection[str]) -> set[str]:
        """Every context the store wants present, other than ``keep``."""
        ...

    def write(
        self, applies: Sequence[tuple[ContextSpec, str | None]], removes: Sequence[str]
    ) -> None:
        """Make each spec of ``applies`` desired, with a preferred node to suggest (a hint,
        never a claim), and the contexts of ``removes`` absent; nudge the pool for each."""
        ...

    def renudge_stalled(self) -> int:
        """Send wanted contexts of stalled nodes to their tag's queue; returns how many."""
        ...

    def live_nodes(self, tag: str) -> NodeLoads:
        """Live nodes serving ``tag``: name -> (contexts they run, capacity)."""
        ...

    def begin_resync(self) -> tuple[str, bool]:
        """Start a resync: ``(epoch, fresh)``, fresh when the store was empty (first start, or
        Redis lost its data)."""
        ...

    def resync_completed(self, epoch: str) -> bool:
        """Record that a resync begun in ``epoch`` wrote every context DRP wants (nodes then
        remove containers still without desired state); False when the store lost its data
        meanwhile."""
        ...


def _stored(d: DesiredDigest) -> Stored:
    present = d.desired is Desired.PRESENT
    fp = None
    if present and d.context and d.image and d.tag:
        fp = fingerprint(d.context, d.image, d.tag)
    return Stored(present, fp, d.tag, d.generation)


class PoolSink:
    """:class:`Sink` on the pool's :class:`StateStore` and :class:`ContextAPI` (thread-safe)."""

    def __init__(self, store: StateStore, api: ContextAPI) -> None:
        """Args:
        store: the state store (batched reads).
        api: the producer API (every write and nudge).
        """
        self.store = store
        self.api = api

    def compare(self, expected: Sequence[tuple[str, Target | None]]) -> dict[str, Stored | None]:
        """Raises: StoreError."""
        digests = self.store.compare_desired(expected)
        return {uuid: None if d is None else _stored(d) for uuid, d in digests.items()}

    def present_except(self, keep: Collection[str]) -> set[str]:
        """Raises: StoreError."""
        keep = set(keep)
        absent: list[tuple[str, Target | None]] = [
            (u, None) for u in self.store.context_ids() if u not in keep
        ]
        differing = self.compare(absent)  # wanted absent: exactly the present ones differ
        return {u for u, s in differing.items() if s is not None and s.present}

    def write(
        self, applies: Sequence[tuple[ContextSpec, str | None]], removes: Sequence[str]
    ) -> None:
        """Desired state for a batch (:meth:`ContextAPI.apply_many`: a few round trips and
        one broker batch of nudges). Removals go through :meth:`ContextAPI.remove`.

        Raises:
            StoreError, or the broker's error when a nudge cannot be sent.
        """
        self.api.apply_many(applies)
        for uuid in removes:
            self.api.remove(uuid)

    def renudge_stalled(self) -> int:
        """Nudge wanted contexts of nodes whose heartbeat expired to their tag queue, where a
        live node of the tag takes them over (the pool's sweep does the same from the node
        side; this is the bridge's share, once per resync).

        Raises:
            StoreError, or the broker's error when a nudge cannot be sent.
        """
        owned: set[str] = set()
        for view in self.store.members.nodes():
            if not view.alive:
                owned |= self.store.ownership.owned_by(view.name)
        if not owned:
            return 0
        # compared with "wanted absent", exactly the present ones differ
        present = self.store.compare_desired([(uuid, None) for uuid in sorted(owned)])
        nudges = [
            (Nudge(uuid=uuid, generation=d.generation),
             placement.nudge_queue(d.tag or DEFAULT_TAG, None, False, None))
            for uuid, d in present.items()
            if d is not None and d.desired is Desired.PRESENT
        ]  # fmt: skip
        self.api.publish_many(nudges)
        if nudges:
            log.info("resync: %d contexts of stalled nodes sent to their tag queues", len(nudges))
        return len(nudges)

    def live_nodes(self, tag: str) -> NodeLoads:
        """Raises: StoreError."""
        return {
            view.name: (self.store.ownership.count_owned(view.name), view.record.stats.capacity)
            for view in self.store.members.nodes()
            if view.alive and view.record is not None and offerable(view.record, tag)
        }

    def begin_resync(self) -> tuple[str, bool]:
        """Raises: StoreError."""
        return self.store.begin_resync()

    def resync_completed(self, epoch: str) -> bool:
        """Raises: StoreError."""
        return self.store.resync_completed(epoch)


__all__ = ["PoolSink", "Sink", "Stored", "Target", "fingerprint"]

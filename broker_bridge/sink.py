"""The bridge's :class:`~broker_bridge.bridge.Sink` on the pool's state store and API."""

from __future__ import annotations

import logging

from broker_bridge.bridge import spec_fingerprint
from pool.contexts.api import ContextAPI
from pool.contexts.models import ContextSpec, Desired, Nudge
from pool.contexts.store import StateStore
from pool.queues import DEFAULT_TAG, tag_queue

log = logging.getLogger(__name__)


class PoolSink:
    """Writes desired state through :class:`pool.contexts.ContextAPI` (thread-safe)."""

    def __init__(self, store: StateStore, api: ContextAPI) -> None:
        self.store = store
        self.api = api

    def current(self, uuid: str) -> tuple[bool, str | None] | None:
        desired = self.store.get_desired(uuid)
        if desired is None:
            return None
        spec = desired.spec
        return desired.desired is Desired.PRESENT, spec_fingerprint(spec) if spec else None

    def known_present(self) -> set[str]:
        uuids = list(self.store.iter_context_ids())
        return {s.uuid for s in self.store.statuses(uuids) if s.desired is Desired.PRESENT}

    def apply(self, spec: ContextSpec, owner_hint: str | None) -> None:
        """Write ``spec``. When the store knows no owner but DRP names a live node of the tag
        with room (state rebuilt after Redis lost it, or a cluster member placed by the
        broker), that node gets it: no second container elsewhere, members spread."""
        if owner_hint and self.store.owner(spec.uuid) is None:
            record = self.store.members.membership(owner_hint)
            if record is not None and spec.tag in record.tags:
                claim = self.store.claim(spec.uuid, owner_hint, None, record.stats.capacity)
                if claim.ok:
                    log.info("context %s: placed on %s as DRP names it", spec.uuid, owner_hint)
        self.api.apply(spec)

    def live_nodes(self, tag: str) -> dict[str, tuple[int, int]]:
        return {
            view.name: (self.store.count_owned(view.name), view.record.stats.capacity)
            for view in self.store.members.nodes()
            if view.alive and view.record is not None and tag in view.record.tags
        }

    def remove(self, uuid: str) -> None:
        self.api.remove(uuid)

    def renudge_stalled(self) -> int:
        """Nudge contexts whose owner stopped heartbeating to their tag queue: a live node of
        that tag takes them over (the pool sweep does the same from the node side)."""
        stalled = [
            s
            for s in self.store.statuses(list(self.store.iter_context_ids()))
            if s.desired is Desired.PRESENT and s.owner and not s.owner_alive
        ]
        for s in stalled:
            nudge = Nudge(uuid=s.uuid, generation=s.generation or 0)
            self.api.publish(nudge, tag_queue(s.tag or DEFAULT_TAG))
        if stalled:
            log.info("resync: %d contexts of stalled nodes sent to their tag queues", len(stalled))
        return len(stalled)

"""Converge one context on its desired state (DESIGN.md invariants 1-5).

A nudge only names a context. Whoever handles it takes the context's lease, reads the latest
desired state and ownership, and either forwards the nudge to the live owner, claims the
context, or converges the local Docker engine on it. Duplicated, reordered or stale nudges
therefore cannot leave a wrong container behind.

Every handled context is counted with its outcome and duration, and every lease taken over
from a dead holder (:mod:`pool.instruments`).
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable

from pool.contexts import placement
from pool.contexts.engine import DockerEngine, EnsureAction
from pool.contexts.lease import LeaseRenewer
from pool.contexts.locks import LockHolder
from pool.contexts.models import (
    ContainerInfo,
    Desired,
    DesiredState,
    Nudge,
    Publisher,
    RunState,
)
from pool.contexts.outcomes import NodeIdentity, NullReporter, Outcome, Reporter
from pool.contexts.store import StateStore
from pool.errors import EngineError, PermanentContextError
from pool.instruments import EXCEPTION_OUTCOME, Instruments, instruments
from pool.queues import node_queue, tag_queue
from pool.settings import Settings

log = logging.getLogger(__name__)

#: A nudge forwarded more often than this is dropped (ownership is flapping; a sweep repairs).
MAX_HOPS = 8
#: Rounds one handler runs while new work keeps arriving before it hands the rest on.
MAX_ROUNDS = 5


class Reconciler:
    """Per-context convergence for one node. Thread-safe; one instance per process."""

    def __init__(
        self,
        store: StateStore,
        engine: DockerEngine,
        settings: Settings,
        node: NodeIdentity,
        publish: Publisher,
        report: Reporter | None = None,
        metrics: Instruments | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings
        self.node = node
        self.publish = publish
        self.report: Reporter = report or NullReporter()
        self.metrics = metrics or instruments()
        self.metrics.declare_outcomes(o.value for o in Outcome)
        self.leases = LeaseRenewer(store, settings.lock_ttl_s, self.metrics)

    def _tell(self, uuid: str, what: str, send: Callable[[], None]) -> None:
        """Report an outcome; never fails the caller (the next change reports again)."""
        try:
            send()
        except Exception as exc:  # broker hiccup or config
            log.warning("context %s: %s not reported: %s", uuid, what, exc)

    # ---- locking ----------------------------------------------------------------------------

    def _token(self) -> str:
        return f"{self.node.name}|{self.node.incarnation}|{os.getpid()}|{secrets.token_hex(4)}"

    def _holder_dead(self, token: str) -> bool:
        """A lease whose holder cannot be working any more (crashed process or node)."""
        holder = LockHolder.parse(token)
        if holder.node == self.node.name:
            if holder.incarnation != self.node.incarnation or holder.pid is None:
                return True  # an earlier start of this very node, or an unreadable token
            try:
                os.kill(holder.pid, 0)
            except ProcessLookupError:
                return True  # a pool child of ours that died mid-task
            except PermissionError:
                return False
            return False
        record = self.store.members.membership(holder.node)
        return record is None or record.incarnation != holder.incarnation

    def reconcile(self, nudge: Nudge) -> Outcome:
        """Handle one nudge: converge the context under its lease.

        Raises:
            StoreError: Redis failed (the task is retried by redelivery; nothing is lost).
        """
        return self._leased(nudge, lambda: self._converge(nudge.uuid, nudge.hops))

    def drop_foreign(self, uuid: str) -> Outcome:
        """Remove this node's containers of ``uuid`` if another node owns it now."""
        return self._leased(Nudge(uuid=uuid), lambda: self._drop_foreign(uuid))

    def _drop_foreign(self, uuid: str) -> Outcome:
        owner = self.store.ownership.owner(uuid)
        if owner is None or owner == self.node.name:
            return self._converge(uuid, 0)
        for ref in self.engine.list_containers(owner=self.node.name, uuid=uuid):
            self.engine.remove_container(ref, f"now owned by {owner}")
        self.store.ownership.disown(uuid, self.node.name)  # drops a stale owned-set entry only
        return Outcome.REMOVED

    def hand_off(self, uuid: str) -> Outcome:
        """Give ``uuid`` up to another node of its tag (a drain), under its lease: remove its
        container here, then disown it and nudge its tag queue. The container is gone before
        ownership is: no other node can claim it (and start a second agent) earlier.

        Returns:
            ``HANDED_OFF``, or ``ERROR`` when a container of it is still here (retry later);
            other outcomes when this node does not own it (any more).

        Raises:
            EngineError / StoreError: Docker or Redis failed; it is still owned here.
        """
        return self._leased(Nudge(uuid=uuid), lambda: self._hand_off(uuid))

    def _hand_off(self, uuid: str) -> Outcome:
        me = self.node.name
        if self.store.ownership.owner(uuid) != me:
            return Outcome.NOTHING
        self.engine.remove(uuid, me)
        if self.engine.list_containers(owner=me, uuid=uuid):
            return Outcome.ERROR  # a removal still in progress: not yet
        desired = self.store.get_desired(uuid)
        self.store.ownership.disown(uuid, me)
        self.store.set_status(uuid, owner=None, state=RunState.PENDING.value, container_id=None)
        if desired is not None and desired.spec is not None:
            nudge = Nudge(uuid=uuid, generation=desired.generation)
            self.publish(nudge, tag_queue(desired.spec.tag))
        log.info("context %s: handed off (node %s drains)", uuid, me)
        return Outcome.HANDED_OFF

    def _may_claim(self) -> bool:
        """Whether this node may claim a context it does not own (not while drained or
        quarantined: it requeues the nudge instead)."""
        return placement.may_claim(self.store.admin.get(self.node.name))

    def _leased(self, nudge: Nudge, work: Callable[[], Outcome]) -> Outcome:
        """Run ``work`` under the lease of the nudge's context, count its outcome and time.

        A backlogged outcome then holds this worker slot (not the lease: others may work on
        the context) for one capacity-check period, so that the node's gate closes its tag
        queues before it could take the same nudge again: no busy loop, the backlog stays in
        the broker. That pause is not part of the measured time.
        """
        started = time.monotonic()
        try:
            outcome = self._rounds(nudge, work)
        except Exception:
            self.metrics.reconciled(EXCEPTION_OUTCOME, time.monotonic() - started)
            raise
        self.metrics.reconciled(outcome.value, time.monotonic() - started)
        if outcome is Outcome.BACKLOGGED:
            time.sleep(self.settings.capacity_check_s)
        return outcome

    def _rounds(self, nudge: Nudge, work: Callable[[], Outcome]) -> Outcome:
        uuid = nudge.uuid
        outcome = Outcome.NOTHING
        for _ in range(MAX_ROUNDS):
            token = self._token()
            acquired, holder = self.store.locks.acquire(uuid, token, self.settings.lock_ttl_s)
            if not acquired:
                if (
                    holder
                    and self._holder_dead(holder)
                    and self.store.locks.steal(uuid, holder, token, self.settings.lock_ttl_s)
                ):
                    self.metrics.lease_stolen()
                    log.warning(
                        "context %s: took over the lease of dead holder %s",
                        uuid,
                        LockHolder.parse(holder).node,
                    )
                else:
                    # The holder sees the dirty mark when it lets go and runs once more.
                    log.debug("context %s: busy, left to the lease holder", uuid)
                    return Outcome.BUSY
            try:
                with self.leases.holding(uuid, token):
                    outcome = work()
            finally:
                released = self.store.locks.release(uuid, token)
            if outcome is Outcome.BACKLOGGED:
                return outcome  # paused by _leased
            if released != 2:
                if released == 0:
                    log.warning(
                        "context %s: lease expired during work (lock_ttl_s=%s)",
                        uuid,
                        self.settings.lock_ttl_s,
                    )
                return outcome
        # Still being changed: hand the next round to the queue rather than hog a slot.
        self.publish(Nudge(uuid=uuid, hops=nudge.hops), node_queue(self.node.name))
        return outcome

    # ---- convergence ------------------------------------------------------------------------

    def _converge(self, uuid: str, hops: int) -> Outcome:
        me = self.node.name
        desired = self.store.get_desired(uuid)
        owner = self.store.ownership.owner(uuid)
        present = desired is not None and desired.desired is Desired.PRESENT

        if owner and owner != me:
            if self.store.members.is_alive(owner):
                return self._forward(uuid, owner, desired, hops)
            log.warning("context %s: owner %s is stalled, taking over", uuid, owner)
            capacity = self.node.capacity if present else 0
            if (
                present
                and desired is not None
                and desired.spec is not None
                and (desired.spec.tag not in self.node.tags or not self._may_claim())
            ):
                # not ours to take (another tag, or drained/quarantined): a node that may
                return self._requeue(uuid, desired, hops)
            claim = self.store.ownership.claim(uuid, me, owner, capacity)
            if claim.outcome == "full":
                return self._backlog(uuid, desired, hops)
            if not claim.ok:
                return Outcome.BUSY
            owner = me
            if present:
                self._tell(uuid, "owner", lambda: self.report.owner_changed(uuid, me))

        if desired is None:
            return self._orphan(uuid, owner)
        if not present:
            return self._converge_absent(uuid, desired)
        assert desired.spec is not None
        if desired.spec.tag not in self.node.tags:
            if owner == me:
                # re-tagged: this node no longer qualifies; release it to the new tag
                self.engine.remove(uuid, me)
                self.store.ownership.disown(uuid, me)
                log.info("context %s: tag is now %s, released", uuid, desired.spec.tag)
            return self._requeue(uuid, desired, hops)
        fresh = False
        if owner is None:
            if not self._may_claim():  # drained or quarantined: another node of the tag
                return self._requeue(uuid, desired, hops)
            preferred = placement.leave_to_preferred(desired.preferred, me, hops)
            if preferred is not None:
                record = self.store.members.membership(preferred)
                if placement.can_host(record, desired.spec.tag):
                    return self._forward(uuid, preferred, desired, hops)
                if record is None and placement.may_still_register(
                    time.time() - desired.updated_at, self.settings.membership_ttl_s
                ):
                    # DRP names a node that has no record (yet): after Redis lost its data it
                    # re-registers within one membership TTL, and it runs the container
                    return self._backlog(uuid, desired, hops)
            claim = self.store.ownership.claim(uuid, me, None, self.node.capacity)
            if claim.outcome == "full":
                return self._backlog(uuid, desired, hops)
            if not claim.ok:
                return self._forward(uuid, claim.owner, desired, hops)
            fresh = True
            self._tell(uuid, "owner", lambda: self.report.owner_changed(uuid, me))
        else:
            parked = self.store.ownership.parked_generation(uuid, me)
            if parked is not None:
                if parked == desired.generation:
                    return Outcome.PARKED  # a permanent error: not again before a spec change
                claim = self.store.ownership.claim(uuid, me, me, self.node.capacity)
                if claim.outcome == "full":  # no room for it here now: let another node try
                    self.store.ownership.disown(uuid, me)
                    return self._backlog(uuid, desired, hops)
        return self._converge_present(uuid, desired, fresh)

    def _forward(self, uuid: str, owner: str, desired: DesiredState | None, hops: int) -> Outcome:
        if hops >= MAX_HOPS:
            log.error("context %s: dropped nudge after %d forwards (owner %s)", uuid, hops, owner)
            return Outcome.NOTHING
        gen = desired.generation if desired else 0
        self.publish(Nudge(uuid=uuid, generation=gen, hops=hops + 1), node_queue(owner))
        return Outcome.FORWARDED

    def _requeue(self, uuid: str, desired: DesiredState | None, hops: int) -> Outcome:
        if desired is None or desired.spec is None:
            return Outcome.NOTHING
        if hops >= MAX_HOPS:
            # Every node with that tag refuses it now; the pool sweep re-nudges it later.
            log.info("context %s: no node of tag %s can take it now", uuid, desired.spec.tag)
            return Outcome.REQUEUED
        nudge = Nudge(uuid=uuid, generation=desired.generation, hops=hops + 1)
        self.publish(nudge, tag_queue(desired.spec.tag))
        return Outcome.REQUEUED

    def _backlog(self, uuid: str, desired: DesiredState | None, hops: int) -> Outcome:
        """This node is full: put the nudge back on its tag queue, where it waits.

        The hop count is kept (a backlog is not a routing loop). :meth:`_leased` pauses after
        releasing the lease (see there).
        """
        if desired is None or desired.spec is None:
            return Outcome.NOTHING
        self.publish(
            Nudge(uuid=uuid, generation=desired.generation, hops=hops), tag_queue(desired.spec.tag)
        )
        return Outcome.BACKLOGGED

    def _converge_absent(self, uuid: str, desired: DesiredState) -> Outcome:
        me = self.node.name
        try:
            self.engine.remove(uuid, me)
        except EngineError as exc:
            self.store.set_status(uuid, state=RunState.ERROR.value, last_error=str(exc))
            log.warning("context %s: remove failed, the sweep retries: %s", uuid, exc)
            return Outcome.ERROR
        if not self.store.finalize_absent(
            uuid, me, desired.generation, self.settings.tombstone_ttl_s
        ):
            # desired state changed meanwhile: run once more before the lease goes
            self.store.locks.mark_dirty(uuid, self.settings.lock_ttl_s)
        return Outcome.REMOVED

    def _converge_present(self, uuid: str, desired: DesiredState, fresh: bool = False) -> Outcome:
        assert desired.spec is not None
        me = self.node.name
        try:
            result = self.engine.ensure(desired.spec, desired.generation, me, fresh=fresh)
        except EngineError as exc:
            permanent = isinstance(exc, PermanentContextError)
            if permanent:
                log.error("context %s: generation %d cannot run: %s", uuid, desired.generation, exc)
            else:
                log.warning("context %s: engine failed, the sweep retries: %s", uuid, exc)
            previous = self.store.set_status(
                uuid,
                owner=me,
                state=(RunState.FAILED if permanent else RunState.ERROR).value,
                last_error=str(exc),
                error_generation=desired.generation,
            )
            if permanent:
                self._park(uuid)
            if previous != str(exc):
                error = str(exc)
                self._tell(uuid, "error", lambda: self.report.error_set(uuid, error))
            return Outcome.PARKED if permanent else Outcome.ERROR
        previous = self.store.set_status(
            uuid,
            owner=me,
            state=RunState.RUNNING.value,
            applied_generation=desired.generation,
            container_id=result.container_id,
            last_error=None,
            error_generation=None,
            orphan_since=None,
        )
        if previous:
            self._tell(uuid, "error cleared", lambda: self.report.error_cleared(uuid))
        if result.action in (EnsureAction.CREATED, EnsureAction.REPLACED):
            info = ContainerInfo(
                node=me,
                container_id=result.container_id,
                container_name=desired.spec.container_name,
                image=desired.spec.image,
                image_id=result.image_id,
                started_at=result.started_at,
                agent_sha256=result.agent_sha256,
            )
            self._tell(uuid, "container info", lambda: self.report.container_started(uuid, info))
        log.info("context %s: %s (generation %d)", uuid, result.action.value, desired.generation)
        return Outcome.CONVERGED

    def _park(self, uuid: str) -> None:
        """Hold a permanently failing context without capacity, and without a container: an
        older container of it would be running a spec that is no longer wanted."""
        me = self.node.name
        self.store.ownership.park(uuid, me)
        try:
            self.engine.remove(uuid, me)
        except EngineError as exc:
            log.warning("context %s: old container not removed (the sweep retries): %s", uuid, exc)

    def _orphan(self, uuid: str, owner: str | None) -> Outcome:
        """No desired state at all: the store lost it, or the context is gone from DRP.

        Ownership is rebuilt from labels and the container kept until the bridge proves the
        context gone: a resync that completed after Redis last lost its data wrote desired
        state for every machine DRP wants, so a container still without any is not wanted.
        Without a bridge (no resync marker), it is kept for ``orphan_grace_s``.
        """
        me = self.node.name
        containers = self.engine.list_containers(owner=me, uuid=uuid)
        if not containers:
            if owner == me:
                self.store.ownership.disown(uuid, me)
            return Outcome.NOTHING
        if owner is None:
            self.store.ownership.claim(uuid, me, None, 0)
        # the marker first, the desired state second: a resync that completed before this
        # read wrote its desired state before that read too
        resynced = self.store.last_resync() is not None
        if self.store.get_desired(uuid) is not None:  # written meanwhile: converge it
            self.store.locks.mark_dirty(uuid, self.settings.lock_ttl_s)
            return Outcome.ORPHAN
        since = self.store.orphan_since(uuid)
        now = time.time()
        if since is None and not resynced:
            self.store.set_status(uuid, owner=me, state=RunState.RUNNING.value, orphan_since=now)
            log.warning(
                "context %s: container without desired state, kept until a resync completes "
                "(at most %.0fs)",
                uuid,
                self.settings.orphan_grace_s,
            )
            return Outcome.ORPHAN
        if not resynced and since is not None and now - since < self.settings.orphan_grace_s:
            return Outcome.ORPHAN
        why = "a complete resync" if resynced else f"{self.settings.orphan_grace_s:.0f}s"
        for ref in containers:
            self.engine.remove_container(ref, f"orphan: no desired state after {why}")
        self.store.ownership.disown(uuid, me)
        self.store.forget_status(uuid)
        return Outcome.REMOVED

"""Drain: a node an operator drained hands its contexts to other nodes, one at a time.

``ctxpool drain NODE`` writes the order (:mod:`pool.admin`); the node's capacity gate closes
its tag queues and its reconciler stops claiming (:mod:`pool.contexts.placement`). This step
moves what it runs: for one context at a time, under the context's lease, it removes the
container, disowns the context and nudges its tag queue (:meth:`Reconciler.hand_off`), so a
machine never has two agents. It then waits until another node runs it, or
``drain_step_timeout_s`` passes, before the next. A context whose tag no other live node can
host now stays where it runs (the node reports ``draining`` and why). When the node owns
nothing and no container of its own is left, it reports ``drained``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from pool.admin import AdminMode, AdminState, AdminStatus, NodeAdmin
from pool.contexts import placement
from pool.contexts.models import Desired, RunState
from pool.contexts.reconcile import Reconciler
from pool.membership import Membership
from pool.node.periodic import PeriodicStep
from pool.node.runtime import NodeRuntime

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Handoff:
    """The context in flight: disowned here, not yet seen running elsewhere."""

    uuid: str
    tag: str
    started: float  # monotonic seconds


class Drainer:
    """The drain of one node: call :meth:`step` periodically while the order stands."""

    def __init__(self, reconciler: Reconciler, clock: Any = time.monotonic) -> None:
        self.reconciler = reconciler
        self.store = reconciler.store
        self.me = reconciler.node.name
        self.timeout_s = reconciler.settings.drain_step_timeout_s
        self.clock = clock
        self.handoff: Handoff | None = None

    def reset(self) -> None:
        """The order was lifted: forget the context in flight (it is on its way elsewhere)."""
        self.handoff = None

    def step(self, order: NodeAdmin) -> AdminStatus:
        """Advance the drain by at most one handoff; return the node's state and progress.

        Raises:
            EngineError / StoreError: Docker or Redis failed (the next step tries again).
        """

        def draining(detail: str, remaining: int) -> AdminStatus:
            return AdminStatus(
                state=AdminState.DRAINING, why=order.why, detail=detail, remaining=remaining
            )

        ownership = self.store.ownership
        owned = sorted(ownership.owned_by(self.me))
        parked = sorted(ownership.parked_by(self.me))
        record = self.store.members.membership(self.me)
        if record is None or record.admin.takes_new_work:
            # until its own record says so, other nodes might leave a context to it
            return draining("announcing the drain", len(owned) + len(parked))
        waited = self._in_flight()
        if waited is not None:
            return draining(waited, len(owned) + len(parked))
        for uuid in parked:  # no container to move: whoever takes it tries its spec again
            self.reconciler.hand_off(uuid)
        live = self._live_records()
        waiting: dict[str, int] = {}
        unsettled = 0
        for uuid in owned:
            desired = self.store.get_desired(uuid)
            if desired is None or desired.desired is not Desired.PRESENT or desired.spec is None:
                unsettled += 1  # being removed, or without desired state: settled here
                continue
            tag = desired.spec.tag
            if not placement.handoff_targets(live, tag, self.me):
                waiting[tag] = waiting.get(tag, 0) + 1
                continue
            outcome = self.reconciler.hand_off(uuid)
            if ownership.owner(uuid) == self.me:
                return draining(f"handoff of {uuid} {outcome.value}; trying again", len(owned))
            self.handoff = Handoff(uuid, tag, self.clock())
            return draining(f"handing off {uuid} (tag {tag})", len(owned) - 1)
        left = len(ownership.owned_by(self.me)) + len(ownership.parked_by(self.me))
        if not left:
            containers = self.reconciler.engine.list_containers(owner=self.me)
            if not containers:
                return AdminStatus(state=AdminState.DRAINED, why=order.why)
            return draining(f"{len(containers)} container(s) of its own left to remove", 0)
        notes = [f"waiting: no other node of tag {tag} ({n})" for tag, n in sorted(waiting.items())]
        if unsettled:
            notes.append(f"{unsettled} being removed or without desired state")
        return draining("; ".join(notes), left)

    def _in_flight(self) -> str | None:
        """What the drain waits for now (``None``: nothing, the next handoff may start)."""
        h = self.handoff
        if h is None:
            return None
        elapsed = self.clock() - h.started
        status = self.store.status(h.uuid)
        if status.owner and status.owner != self.me and status.state is RunState.RUNNING:
            log.info("drain: context %s runs on %s after %.1fs", h.uuid, status.owner, elapsed)
        elif status.desired is not Desired.PRESENT:
            log.info("drain: context %s was removed meanwhile", h.uuid)
        elif elapsed > self.timeout_s:
            log.warning(
                "drain: context %s not running on another node %.0fs after its handoff "
                "(drain_step_timeout_s); it waits unowned in tag-%s, next one",
                h.uuid,
                elapsed,
                h.tag,
            )
        else:
            return f"waiting for {h.uuid} to run on another node of tag {h.tag}"
        self.handoff = None
        return None

    def _live_records(self) -> list[Membership]:
        """Live nodes' records, with the administrative state the operators ordered (a
        record can be one heartbeat behind a new order)."""
        return [
            v.record.model_copy(update={"admin": v.admin})
            for v in self.store.members.nodes()
            if v.alive and v.record is not None
        ]


class DrainStep(PeriodicStep):
    """Reads the operator's order every ``capacity_check_s`` and, while it says *drain*,
    advances the drain by one step (:class:`Drainer`). Its latest state goes into the node's
    heartbeat (``NodeRuntime.drain_status``)."""

    label = "ctxpool-drain"
    loop = "drain"

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        self.drainer: Drainer | None = None
        super().__init__(consumer, **kwargs)

    def period_s(self, rt: NodeRuntime) -> float:
        return rt.settings.capacity_check_s

    def stale_after_s(self, rt: NodeRuntime) -> float:
        # one step may remove a container: allow for a slow engine
        return max(3 * self.period_s(rt), rt.settings.docker_timeout_s + 5.0)

    def tick(self, consumer: Any, rt: NodeRuntime) -> None:
        identity = rt.identity
        assert identity is not None
        order = rt.store.admin.get(identity.name)
        if order is None or order.mode is not AdminMode.DRAINING:
            if self.drainer is not None:
                self.drainer.reset()
            rt.drain_status = AdminStatus()
            return
        if self.drainer is None:
            self.drainer = Drainer(rt.reconciler)
        status = self.drainer.step(order)
        if status.state != rt.drain_status.state or status.detail != rt.drain_status.detail:
            log.info(
                "node %s: %s (%d left) %s",
                identity.name,
                status.state.value,
                status.remaining,
                status.detail,
            )
        rt.drain_status = status

"""Placement: which node runs a context. The one module that decides it (DESIGN.md inv. 8).

Only nodes claim (a compare-and-set in the store, :meth:`StateStore.claim`). A producer (the
bridge, the context broker) may name a *preferred* node, nothing more: the nudge goes to that
node's queue, and another node that receives it first leaves it to the preferred one. A
preferred node that is gone, full or not serving the context's tag is ignored, and the first
free node of the tag claims (pull-based placement, DESIGN.md inv. 4).

A node an operator drained or quarantined (:mod:`pool.admin`) takes nothing new: its intake
is closed, it claims no unowned context, and no other node leaves a context to it. A draining
node hands its contexts, one at a time, to another node of their tag that can host them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set

from pool.admin import NodeAdmin
from pool.membership import Membership
from pool.queues import node_queue, tag_queue

#: Live nodes of a tag: name -> (contexts it runs, capacity).
NodeLoads = dict[str, tuple[int, int]]


def can_host(record: Membership | None, tag: str) -> bool:
    """Whether a node (its live membership record, ``None`` when stalled) can take a new
    context of ``tag``: it serves the tag, has room, and is not drained or quarantined."""
    if record is None or tag not in record.tags or not record.admin.takes_new_work:
        return False
    return record.stats.running_contexts < record.stats.capacity


def offerable(record: Membership | None, tag: str) -> bool:
    """Whether a live node may be named as the preferred node of new contexts of ``tag`` (room
    is :func:`spread`'s business): it serves the tag and is not drained or quarantined."""
    return record is not None and tag in record.tags and record.admin.takes_new_work


def may_claim(order: NodeAdmin | None) -> bool:
    """Whether a node may claim a context it does not own yet (a fresh claim or a takeover
    from a stalled owner): not while an operator's drain or quarantine order stands."""
    return order is None


def intake_open(running: int, capacity: int, order: NodeAdmin | None) -> bool:
    """Whether a node consumes its tag queues: below capacity and free to claim."""
    return running < capacity and may_claim(order)


def handoff_targets(records: Iterable[Membership], tag: str, me: str) -> list[str]:
    """Live nodes other than ``me`` that can take a context of ``tag`` from a draining node
    now (``records``: live membership records). Empty: the context stays where it runs."""
    return sorted(r.node for r in records if r.node != me and can_host(r, tag))


def nudge_queue(tag: str, owner: str | None, owner_alive: bool, preferred_open: str | None) -> str:
    """Where a nudge goes: the live owner's queue; else the preferred node's when it can host
    (``preferred_open``); else the tag queue."""
    if owner and owner_alive:
        return node_queue(owner)
    if not owner and preferred_open:
        return node_queue(preferred_open)
    return tag_queue(tag)


def leave_to_preferred(preferred: str | None, me: str, hops: int) -> str | None:
    """The node an unowned context should be left to, when the nudge reached ``me`` first.

    Only on the nudge's first hop (a forwarded or backlogged nudge is claimed by whoever holds
    it, so a full preferred node cannot bounce it around); the caller checks
    :func:`can_host` on the returned node.
    """
    if preferred and preferred != me and hops == 0:
        return preferred
    return None


def may_still_register(age_s: float, membership_ttl_s: float) -> bool:
    """Whether a preferred node without a membership record should still be waited for: a
    desired state younger than one membership TTL may have been rebuilt after Redis lost its
    data, before that node's next heartbeat (it runs the container: another node must not
    create a second one). Older, the node is gone, and any node of the tag may claim."""
    return age_s < membership_ttl_s


def drp_candidates(nodes: NodeLoads, tag: str, registered: Mapping[str, Set[str]]) -> NodeLoads:
    """The live nodes (``nodes``, from the store) that may be offered a new context of ``tag``.

    A node registered in DRP (some machine's member name is the node's name; ``registered``
    maps it to the tags its machine carries) is a candidate only when it carries ``tag``
    there too. A node not registered in DRP at all stays a candidate (Redis alone decides).
    """
    return {n: load for n, load in nodes.items() if n not in registered or tag in registered[n]}


def spread(nodes: NodeLoads, count: int) -> list[str | None]:
    """A preferred node for each of ``count`` new contexts: always the least loaded (by share
    of capacity) with room left; ``None`` when every node is full (the tag queue decides)."""
    load = {name: running for name, (running, _) in nodes.items()}
    out: list[str | None] = []
    for _ in range(count):
        room = [n for n, (_, cap) in nodes.items() if load[n] < cap]
        if not room:
            out.append(None)
            continue
        best = min(room, key=lambda n: (load[n] / nodes[n][1], n))
        load[best] += 1
        out.append(best)
    return out

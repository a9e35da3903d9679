"""The context broker for clusters and resource brokers.

A cluster (or resource broker) whose ``resource/broker`` names the broker this pool serves
(default ``context-broker``) and which has ``cluster/count`` gets exactly that many member
machines in DRP. Each member runs the cluster's ``Context`` with the cluster's
``docker-context/tag``, and carries ``ctxpool/cluster: <cluster uuid>``. The bridge then turns
members into containers like any machine, and the nodes with that tag take them. Raising the
count adds members, lowering it removes the newest, 0 (or deleting the cluster) drains. The
member names are recorded on the cluster as ``cluster/machines``. New members are spread over
the tag's live nodes (least loaded first, within capacity) by naming the node in
``docker-context/owner``; the bridge then places them there (pull-based placement decides
when every node is full).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from broker_bridge.models import Machine
from broker_bridge.translate import count_of, str_param, tag_of
from pool.drp.client import DrpClient
from pool.drp.errors import DrpNotFoundError
from pool.drp.params import (
    MEMBER_PARAM,
    MEMBERS_PARAMS,
    OWNER_PARAMS,
    RESOURCE_BROKER_PARAM,
    TAG_PARAMS,
)

log = logging.getLogger(__name__)

_INDEX_RE = re.compile(r"-(\d+)$")


@dataclass(frozen=True, slots=True)
class Plan:
    """What to change so that a cluster has its count of members."""

    create: list[str]  # names of members to create
    delete: list[str]  # uuids of members to delete (newest first)
    members: list[str]  # names of the members afterwards, sorted


def member_index(name: str) -> int:
    match = _INDEX_RE.search(name)
    return int(match.group(1)) if match else -1


def plan(cluster: Machine, members: list[Machine], broker: str) -> Plan | None:
    """The changes ``cluster`` needs, or None when ctxpool does not broker it.

    Raises:
        BadObject: ``cluster/count`` or the tag has the wrong type.
    """
    if str_param(cluster, (RESOURCE_BROKER_PARAM,)) != broker:
        return None
    count = count_of(cluster)
    if count is None:
        return None
    tag_of(cluster)  # validated here, used by the members
    ordered = sorted(members, key=lambda m: (member_index(m.name), m.name))
    keep, extra = ordered[:count], ordered[count:]
    base = cluster.name or cluster.uuid[:8]
    next_index = max([member_index(m.name) for m in ordered] + [0]) + 1
    create = [f"{base}-{next_index + i}" for i in range(count - len(keep))]
    names = sorted([m.name for m in keep] + create, key=lambda n: (member_index(n), n))
    return Plan(create=create, delete=[m.uuid for m in reversed(extra)], members=names)


def member_object(cluster: Machine, name: str, node: str | None = None) -> dict[str, Any]:
    """The DRP machine object of a new member (``node``: where it should run)."""
    params: dict[str, Any] = {MEMBER_PARAM: cluster.uuid, TAG_PARAMS[0]: tag_of(cluster)}
    if node:
        params[OWNER_PARAMS[0]] = node
    return {"Name": name, "Context": cluster.context, "Params": params}


NodeLoads = dict[str, tuple[int, int]]  # live node of the tag -> (contexts it runs, capacity)


def spread(nodes: NodeLoads, count: int) -> list[str | None]:
    """Pick a node for each of ``count`` new members: always the least loaded (by share of
    capacity) with room left; None when every node is full (the tag queue decides later)."""
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


async def reconcile_cluster(
    client: DrpClient,
    kind: str,
    cluster: Machine | None,
    uuid: str,
    broker: str,
    live_nodes: Callable[[str], Awaitable[NodeLoads]] | None = None,
) -> Plan | None:
    """Bring one cluster's members in DRP to its count (``cluster`` None: it was deleted).

    Raises:
        DrpError: DRP calls failed (the next event or resync retries).
        BadObject: the cluster's params have the wrong type.
    """
    members = await list_members(client, uuid)
    if cluster is None:
        for member in members:
            await _delete(client, member.uuid)
        if members:
            log.info("cluster %s deleted: removed its %d members", uuid, len(members))
        return None
    todo = plan(cluster, members, broker)
    if todo is None:
        return None
    placement: list[str | None] = [None] * len(todo.create)
    if todo.create and live_nodes is not None:
        placement = spread(await live_nodes(tag_of(cluster)), len(todo.create))
    for name, node in zip(todo.create, placement, strict=True):
        await client.create("machines", member_object(cluster, name, node))
    for member_uuid in todo.delete:
        await _delete(client, member_uuid)
    recorded = cluster.params.get(MEMBERS_PARAMS[0])
    if recorded != todo.members:
        await client.set_param(kind, uuid, MEMBERS_PARAMS[0], todo.members)
    if todo.create or todo.delete:
        log.info(
            "cluster %s: %d members (+%d, -%d)",
            cluster.name or uuid,
            len(todo.members),
            len(todo.create),
            len(todo.delete),
        )
    return todo


async def list_members(client: DrpClient, cluster_uuid: str) -> list[Machine]:
    out = []
    async for page in client.list_pages("machines", f"{MEMBER_PARAM}=Eq({cluster_uuid})"):
        for raw in page:
            if isinstance(raw, dict) and raw.get("Params", {}).get(MEMBER_PARAM) == cluster_uuid:
                out.append(Machine.model_validate(raw))
    return out


async def _delete(client: DrpClient, uuid: str) -> None:
    with contextlib.suppress(DrpNotFoundError):  # gone already
        await client.delete("machines", uuid)

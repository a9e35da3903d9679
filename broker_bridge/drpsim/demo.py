"""The demo content of ``ctxpool up`` and the compose ``demo`` profile: a docker context on a
plain busybox image, machines on two tags, and one cluster the context broker fills.

Every demo machine's container runs the simulator's stand-in ``drpcli`` (injected by the node
the way DRP's plugin does), which writes :data:`~broker_bridge.drpsim.agent.AGENT_PARAM` back
to its own machine: the round trip DRP → bridge → queue → node → container → agent → DRP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker_bridge.drpsim.agent import AGENT_PARAM
from broker_bridge.drpsim.sim import DrpSim
from pool.drp.params import COUNT_PARAMS, RESOURCE_BROKER_PARAM, TAG_PARAM

DEMO_CONTEXT = "demo-busybox"
DEMO_TAGS = ("ci", "audit")
DEMO_CLUSTER = "demo-pool"


@dataclass(frozen=True, slots=True)
class DemoContent:
    """What :func:`seed_demo` created (uuids)."""

    machines: list[str]
    cluster: str


def seed_demo(
    sim: DrpSim,
    image: str,
    per_tag: int = 2,
    cluster_count: int = 2,
    broker: str = "context-broker",
) -> DemoContent:
    """Create the demo context, ``per_tag`` machines on each of :data:`DEMO_TAGS`, and a
    cluster (tag ``ci``) with ``cluster/count: cluster_count``."""
    sim.put_context(DEMO_CONTEXT, engine="docker-context", image=image)
    machines = [
        sim.create_machine(f"demo-{tag}-{i}", DEMO_CONTEXT, {TAG_PARAM: tag})["Uuid"]
        for tag in DEMO_TAGS
        for i in range(1, per_tag + 1)
    ]
    cluster = sim.create_machine(
        DEMO_CLUSTER,
        DEMO_CONTEXT,
        {
            TAG_PARAM: DEMO_TAGS[0],
            RESOURCE_BROKER_PARAM: broker,
            COUNT_PARAMS[0]: cluster_count,
        },
        kind="clusters",
    )
    return DemoContent(machines=machines, cluster=str(cluster["Uuid"]))


@dataclass(frozen=True, slots=True)
class RoundTrip:
    """One demo machine as the summary shows it."""

    name: str
    uuid: str
    tag: str
    owner: str | None
    agent_seen: str | None


def round_trips(sim: DrpSim) -> list[RoundTrip]:
    """Every machine of the demo context: which node DRP says runs it, and what its agent
    wrote back (``None`` until the agent ran)."""
    out: list[RoundTrip] = []
    for obj in sim.list("machines"):
        if obj.get("Context") != DEMO_CONTEXT:
            continue
        params: dict[str, Any] = obj.get("Params") or {}
        owner = params.get("docker-context/owner")
        seen = params.get(AGENT_PARAM)
        out.append(
            RoundTrip(
                name=str(obj.get("Name", "")),
                uuid=str(obj["Uuid"]),
                tag=str(params.get(TAG_PARAM, "")),
                owner=owner if isinstance(owner, str) and owner != "docker-context" else None,
                agent_seen=seen if isinstance(seen, str) else None,
            )
        )
    return sorted(out, key=lambda r: r.name)

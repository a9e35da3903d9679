"""Nodes visible in DRP (``CTXPOOL_DRP_MACHINE``), the context broker's placement honouring
those registrations, and ``broker/set-*`` on members: DRP simulator + bridge + real workers."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import docker
import pytest

from broker_bridge.drpsim import DrpSim
from pool.contexts.store import StateStore
from tests import support
from tests.support import Worker, wait_for

pytestmark = pytest.mark.integration

TAGS = ("docker-context/tags", "context-broker/tags")
NAMES = ("docker-context/member-name", "context-broker/member-name")
TAG = "docker-context/tag"
OWNER = "docker-context/owner"


def _params(sim: DrpSim, uuid: str) -> dict[str, Any]:
    return dict((sim.get(uuid) or {}).get("Params", {}))


def _members(sim: DrpSim, cluster_uuid: str) -> list[dict[str, Any]]:
    return [m for m in sim.list() if m["Params"].get("ctxpool/cluster") == cluster_uuid]


def test_node_shows_its_tags_and_liveness_on_its_drp_machine(
    sim: DrpSim, drp_env: dict[str, str], start_worker: Callable[..., Worker]
) -> None:
    m = sim.create_machine("host-d1", params={"keep": "me"})
    worker = start_worker(
        "d-1",
        ["tag-ci", "tag-audit"],
        CTXPOOL_DRP_MACHINE="host-d1",  # a name: resolved through ?Name=
        CTXPOOL_DRP_MACHINE_SYNC_S="0.5",
        **drp_env,
    )
    want = {TAGS[0]: ["audit", "ci"], TAGS[1]: ["audit", "ci"], NAMES[0]: "d-1", NAMES[1]: "d-1"}

    def shown() -> bool:
        params = _params(sim, m["Uuid"])
        return all(params.get(k) == v for k, v in want.items())

    wait_for(shown, 20, 0.1, what="tags and member name on the node's DRP machine")
    assert _params(sim, m["Uuid"])["keep"] == "me"

    # kept current: a cleared param comes back within a period, and unchanged ones are not
    # written again (only what differs)
    sim.seen.clear()
    sim.set_param(m["Uuid"], NAMES[1], "someone-else")
    wait_for(lambda: _params(sim, m["Uuid"]).get(NAMES[1]) == "d-1", 10, 0.1, what="re-set")
    time.sleep(1.5)  # a few more periods
    posts = [p for method, p, _ in list(sim.seen) if method == "POST"]
    assert len(posts) == 1, posts
    assert posts[0].endswith("context-broker%2Fmember-name"), posts

    worker.stop()  # SIGTERM: a clean shutdown
    assert not worker.alive()
    params = _params(sim, m["Uuid"])
    assert NAMES[0] not in params
    assert NAMES[1] not in params
    assert params[TAGS[0]] == ["audit", "ci"]  # the tags stay; liveness is the member name
    assert "cleared" in worker.log()


def test_a_missing_drp_machine_is_an_error_not_a_crash(
    sim: DrpSim, drp_env: dict[str, str], start_worker: Callable[..., Worker], store: StateStore
) -> None:
    worker = start_worker(
        "d-2", ["tag-ci"], CTXPOOL_DRP_MACHINE="no-such-host", CTXPOOL_DRP_MACHINE_SYNC_S="0.5",
        **drp_env,
    )  # fmt: skip
    wait_for(lambda: "no DRP machine named 'no-such-host'" in worker.log(), 20, 0.1)
    line = next(ln for ln in worker.log().splitlines() if "no-such-host" in ln)
    assert "ERROR" in line
    assert "Traceback" not in worker.log()
    assert worker.alive()
    assert any(v.name == "d-2" and v.alive for v in store.members.nodes())  # still a member


def test_broker_places_only_on_nodes_drp_registers_with_the_tag(
    sim: DrpSim,
    drp_env: dict[str, str],
    run_bridge: Callable[..., None],
    start_worker: Callable[..., Worker],
    docker_engine: docker.DockerClient,
    ctx_name: str,
    test_image: str,
) -> None:
    host = sim.create_machine("host-r1")
    start_worker("r-1", ["tag-batch"], CTXPOOL_DRP_MACHINE="host-r1", **drp_env)
    start_worker("r-2", ["tag-batch"], **drp_env)  # no DRP machine of its own ...
    # ... but a DRP machine names it as a member without the tag: it is not preferred
    sim.create_machine("host-r2", params={NAMES[1]: "r-2", TAGS[1]: ["other"]})
    wait_for(lambda: _params(sim, host["Uuid"]).get(NAMES[0]) == "r-1", 20, 0.1)
    sim.put_context(ctx_name, engine="docker-context", image=test_image)
    cluster = sim.create_machine(
        "batch",
        ctx_name,
        {"resource/broker": "context-broker", TAG: "batch", "cluster/count": 4},
        kind="clusters",
    )
    run_bridge(resync_s=60)

    def running() -> dict[str, dict[str, Any]]:
        return {
            name: attrs
            for name, attrs in support.container_state(docker_engine, f"drp-{ctx_name}-").items()
            if attrs["State"]["Running"]
        }

    wait_for(lambda: len(running()) == 4, 90, 0.5, what="4 members up")
    owners = Counter(a["Config"]["Labels"]["ctxpool.owner"] for a in running().values())
    assert owners == {"r-1": 4}  # without the DRP registrations: 2 and 2
    preferred = Counter(m["Params"].get(OWNER) for m in _members(sim, cluster["Uuid"]))
    assert preferred == {"r-1": 4}


def test_cluster_members_carry_broker_set_params(
    sim: DrpSim, drp_env: dict[str, str], run_bridge: Callable[..., None]
) -> None:
    sim.put_profile(  # set-* from a profile: the broker reads the cluster aggregated
        "audit-pipeline",
        {
            "broker/set-pipeline": "universal-application-audit",
            "broker/set-workflow": "universal-runbook",
        },
    )
    cluster = sim.create_machine(
        "audits",
        "base-runner",
        {
            "resource/broker": "context-broker",
            TAG: "ci",
            "cluster/count": 2,
            "broker/set-context": "ansible-runner",
        },
        kind="clusters",
    )
    sim.update_machine(cluster["Uuid"], kind="clusters", Profiles=["audit-pipeline"])
    run_bridge(resync_s=60)
    wait_for(lambda: len(_members(sim, cluster["Uuid"])) == 2, 30, 0.1, what="2 members")
    for m in _members(sim, cluster["Uuid"]):
        assert m["Context"] == "ansible-runner"
        assert m["Meta"]["BaseContext"] == "ansible-runner"
        assert m["Pipeline"] == "universal-application-audit"
        assert m["Workflow"] == "universal-runbook"
        assert m["Params"][TAG] == "ci"

    bad = sim.create_machine(
        "bad",
        "base-runner",
        {"resource/broker": "context-broker", "cluster/count": 1, "broker/set-workflow": 3},
        kind="clusters",
    )
    later = sim.create_machine(
        "later", "base-runner", {"resource/broker": "context-broker", "cluster/count": 1},
        kind="clusters",
    )  # fmt: skip
    wait_for(lambda: len(_members(sim, later["Uuid"])) == 1, 30, 0.1, what="bridge still up")
    assert _members(sim, bad["Uuid"]) == []  # wrong type: skipped (logged and counted)

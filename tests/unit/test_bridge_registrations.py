"""Nodes registered in DRP narrow the context broker's placement; brokers apply
``broker/set-context``, ``broker/set-pipeline`` and ``broker/set-workflow`` to their members.

Pure parts on plain data; :func:`reconcile_cluster` against the DRP simulator on loopback."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from broker_bridge.clusters import member_object, plan, reconcile_cluster
from broker_bridge.drpsim import DrpSim
from broker_bridge.intake import BadInput, parse_cluster, slim_machine
from broker_bridge.models import Machine
from broker_bridge.translate import (
    BadObject,
    registered_nodes,
    registration_of,
    relevant_change,
)
from pool.contexts.placement import NodeLoads, drp_candidates
from pool.drp.client import DrpClient
from pool.drp.config import DrpConfig

UUID = "3f1c2a4e-8d0b-4a57-9b1e-0c5d2e7f6a11"
BROKER = "context-broker"


def _machine(params: dict[str, Any], uuid: str = UUID) -> Machine:
    return Machine.model_validate({"Uuid": uuid, "Name": "x", "Params": params})


def _cluster(**params: Any) -> Machine:
    base = {"resource/broker": BROKER, "docker-context/tag": "batch", "cluster/count": 1}
    return Machine.model_validate(
        {"Uuid": UUID, "Name": "batch", "Context": "runner", "Params": {**base, **params}}
    )


# ---- registrations ------------------------------------------------------------------------


def test_registration_reads_both_spellings() -> None:
    seed = _machine({"docker-context/member-name": "a", "docker-context/tags": ["ci"]})
    assert registration_of(seed) == (frozenset({"a"}), frozenset({"ci"}))
    rackn = _machine({"context-broker/member-name": "a", "context-broker/tags": ["ci", "x"]})
    assert registration_of(rackn) == (frozenset({"a"}), frozenset({"ci", "x"}))
    mixed = _machine({"context-broker/member-name": "a", "docker-context/tags": ["ci"]})
    assert registration_of(mixed) == (frozenset({"a"}), frozenset({"ci"}))
    assert registration_of(_machine({"docker-context/tags": ["ci"]})) == (frozenset(), frozenset())
    with pytest.raises(BadObject, match="list of strings"):
        registration_of(_machine({"docker-context/member-name": "a", "docker-context/tags": "ci"}))
    with pytest.raises(BadObject, match="must be a string"):
        registration_of(_machine({"docker-context/member-name": 7}))


def test_registered_nodes_skip_bad_machines_and_report_them() -> None:
    bad: list[BadObject] = []
    machines = [
        _machine({"docker-context/member-name": "a", "docker-context/tags": ["ci"]}, "u1"),
        _machine({"context-broker/member-name": "b"}, "u2"),  # registered, no tags
        _machine({"docker-context/member-name": "c", "docker-context/tags": [1]}, "u3"),
        _machine({"docker-context/tag": "ci"}, "u4"),  # an ordinary machine
    ]
    assert registered_nodes(machines, bad.append) == {"a": {"ci"}, "b": frozenset()}
    assert [b.key for b in bad] == ["u3"]


def test_placement_keeps_unregistered_and_tagged_registered_nodes() -> None:
    live: NodeLoads = {"a": (0, 5), "b": (1, 5), "c": (2, 5)}
    registered = {"a": {"batch"}, "b": {"ci"}}
    assert drp_candidates(live, "batch", registered) == {"a": (0, 5), "c": (2, 5)}
    assert drp_candidates(live, "ci", registered) == {"b": (1, 5), "c": (2, 5)}
    assert drp_candidates(live, "batch", {}) == live
    assert drp_candidates(live, "batch", {"gone": {"x"}}) == live  # not live: no effect


def test_registration_changes_reach_the_bridge() -> None:
    before = {"Context": "", "Params": {"docker-context/member-name": "a"}}
    after = {"Context": "", "Params": {}}
    assert relevant_change(before, after)  # liveness gone: not dropped as irrelevant
    tag_params = {"context-broker/tags": ["ci"]}
    tags = {"Context": "", "Params": tag_params}
    assert relevant_change({"Context": "", "Params": {}}, tags)
    assert not relevant_change(tags, {"Context": "", "Params": {**tag_params, "inventory/x": 1}})
    slim = slim_machine(
        {
            "Uuid": UUID,
            "Params": {"docker-context/tags": ["ci"], "context-broker/member-name": "a", "z": 1},
        }
    )
    assert slim.params == {"docker-context/tags": ["ci"], "context-broker/member-name": "a"}


# ---- broker/set-* -------------------------------------------------------------------------


def test_member_object_applies_broker_set_params() -> None:
    plain = member_object(_cluster(), "batch-1", "a")
    assert plain["Context"] == "runner"
    assert plain["Meta"] == {"BaseContext": "runner"}
    assert "Pipeline" not in plain
    assert "Workflow" not in plain
    assert plain["Params"] == {
        "ctxpool/cluster": UUID,
        "docker-context/tag": "batch",
        "docker-context/owner": "a",
    }
    sets = {
        "broker/set-context": "ansible-runner",
        "broker/set-pipeline": "universal-application-audit",
        "broker/set-workflow": "universal-runbook",
    }
    full = member_object(_cluster(**sets), "batch-1")
    assert full["Context"] == "ansible-runner"
    assert full["Meta"] == {"BaseContext": "ansible-runner"}
    assert full["Pipeline"] == "universal-application-audit"
    assert full["Workflow"] == "universal-runbook"
    assert not set(sets) & set(full["Params"])  # the cluster's instructions, not the member's
    no_context = Machine.model_validate({"Uuid": UUID, "Params": {}})
    assert member_object(no_context, "m-1")["Context"] == ""
    assert "Meta" not in member_object(no_context, "m-1")


@pytest.mark.parametrize(
    "param", ["broker/set-context", "broker/set-pipeline", "broker/set-workflow"]
)
def test_wrong_broker_set_types_are_bad_objects_before_any_create(param: str) -> None:
    cluster = _cluster(**{param: ["not", "a", "string"]})
    with pytest.raises(BadObject, match=param):
        plan(cluster, [], BROKER)
    with pytest.raises(BadObject, match=param):
        member_object(cluster, "batch-1")


# ---- reconcile_cluster against the simulator ----------------------------------------------


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    with DrpSim(seed=9) as s:
        yield s


def _members(sim: DrpSim, cluster_uuid: str) -> list[dict[str, Any]]:
    return [m for m in sim.list() if m["Params"].get("ctxpool/cluster") == cluster_uuid]


def test_reconcile_creates_members_with_set_params_on_drp_candidates(sim: DrpSim) -> None:
    params = {
        "resource/broker": BROKER,
        "docker-context/tag": "batch",
        "cluster/count": 4,
        "broker/set-context": "ansible-runner",
        "broker/set-pipeline": "universal-application-audit",
        "broker/set-workflow": "universal-runbook",
    }
    raw = sim.create_machine("batch", "runner", params, kind="clusters")
    live: NodeLoads = {"a": (0, 10), "b": (0, 10)}

    async def live_nodes(tag: str) -> NodeLoads:
        assert tag == "batch"
        return live

    async def run(registered: dict[str, frozenset[str]] | None) -> None:
        client = DrpClient(DrpConfig(url=sim.url, token=sim.token))
        try:
            cluster = parse_cluster("clusters", raw)
            await reconcile_cluster(
                client,
                "clusters",
                cluster,
                cluster.uuid,
                BROKER,
                live_nodes,
                BadInput(Counter()),
                (lambda: registered) if registered is not None else None,
            )
        finally:
            await client.close()

    # "b" is registered in DRP, but its machine does not carry the tag: all go to "a"
    asyncio.run(run({"b": frozenset({"ci"}), "a": frozenset({"batch"})}))
    members = _members(sim, raw["Uuid"])
    assert len(members) == 4
    assert Counter(m["Params"]["docker-context/owner"] for m in members) == {"a": 4}
    for m in members:
        assert m["Context"] == "ansible-runner"
        assert m["Meta"]["BaseContext"] == "ansible-runner"
        assert m["Pipeline"] == "universal-application-audit"
        assert m["Workflow"] == "universal-runbook"

    # the same without registrations spreads over both (the filter is what made the difference)
    for m in members:
        sim.delete_machine(m["Uuid"])
    asyncio.run(run(None))
    owners = Counter(m["Params"]["docker-context/owner"] for m in _members(sim, raw["Uuid"]))
    assert owners == {"a": 2, "b": 2}

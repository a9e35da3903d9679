"""DRP objects -> desired contexts (pure), coalescing, and model fidelity to drppy-client."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_bridge.coalesce import Coalescer
from broker_bridge.models import Context, Event, Machine
from broker_bridge.translate import (
    BadObject,
    count_of,
    owner_of,
    relevant_change,
    tag_of,
    wanted,
)

UUID = "3f1c2a4e-8d0b-4a57-9b1e-0c5d2e7f6a11"
CONTEXTS = {
    "runner": Context(name="runner", engine="docker-context", image="drp/agent:v4"),
    "other": Context(name="other", engine="some-other-engine", image="x:1"),
    "noimage": Context(name="noimage", engine="docker-context", image=""),
}


def machine(**fields: Any) -> Machine:
    return Machine.model_validate({"Uuid": UUID, "Name": "m1", **fields})


def test_models_read_drp_json_and_ignore_unknown_keys() -> None:
    m = Machine.model_validate(
        {
            "Uuid": UUID,
            "Name": "m1",
            "Context": "runner",
            "Meta": {"BaseContext": "runner"},
            "Params": {"docker-context/tag": "ci"},
            "WorkOrderMode": True,
            "SomethingNewInDrp5": [1, 2],
        }
    )
    assert (m.context, m.meta["BaseContext"], m.work_order_mode) == ("runner", "runner", True)
    assert m.to_drp()["WorkOrderMode"] is True
    ev = Event.model_validate(
        {"Time": "t", "Type": "machines", "Action": "save", "Key": UUID, "Object": {}}
    )
    assert (ev.type, ev.action, ev.original) == ("machines", "save", None)


def test_models_match_drppy_client_keys() -> None:
    """Every JSON key our models declare exists in RackN's generated client's models."""
    drppy = pytest.importorskip("drppy_client.models", reason="drppy-client not installed")
    pairs = [
        (Machine, drppy.machine.Machine),
        (Context, drppy.context.Context),
        (Event, drppy.event.Event),
    ]
    for ours, theirs in pairs:
        declared = {f.alias or name for name, f in ours.model_fields.items()}
        assert declared <= set(theirs.attribute_map.values()), ours.__name__


def test_wanted_for_our_engine_only() -> None:
    w = wanted(machine(Context="runner", Params={"docker-context/tag": "ci"}), CONTEXTS)
    assert w is not None
    assert (w.uuid, w.context, w.image, w.tag, w.owner) == (
        UUID,
        "runner",
        "drp/agent:v4",
        "ci",
        None,
    )
    spec = w.spec("machine-token", ["https://drp:8092"])
    assert spec.container_name == f"drp-runner-{UUID}"
    assert spec.token.get_secret_value() == "machine-token"
    assert wanted(machine(Context=""), CONTEXTS) is None
    assert wanted(machine(Context="other"), CONTEXTS) is None  # another engine's
    assert wanted(machine(Context="unknown"), CONTEXTS) is None  # DRP has no such context
    with pytest.raises(BadObject, match="no Image"):
        wanted(machine(Context="noimage"), CONTEXTS)


def test_tag_owner_and_their_context_broker_spellings() -> None:
    assert tag_of(machine()) == "default"
    assert tag_of(machine(Params={"context-broker/tag": "audit"})) == "audit"
    assert tag_of(machine(Params={"docker-context/tag": "ci", "context-broker/tag": "x"})) == "ci"
    assert owner_of(machine(Params={"docker-context/owner": "docker-context"})) is None
    assert owner_of(machine(Params={"context-broker/owner": "node-a"})) == "node-a"
    with pytest.raises(BadObject, match="must be a string"):
        tag_of(machine(Params={"docker-context/tag": ["ci"]}))
    with pytest.raises(BadObject, match="tag"):
        tag_of(machine(Params={"docker-context/tag": "no spaces allowed"}))


@pytest.mark.parametrize(("value", "count"), [(None, None), (0, 0), (5, 5), ("3", 3), (2.0, 2)])
def test_cluster_count(value: object, count: int | None) -> None:
    params = {} if value is None else {"cluster/count": value}
    assert count_of(machine(Params=params)) == count


@pytest.mark.parametrize("value", [-1, "x", 1.5, True, [3]])
def test_cluster_count_rejects(value: object) -> None:
    with pytest.raises(BadObject, match="cluster/count"):
        count_of(machine(Params={"cluster/count": value}))


def test_relevant_change_filters_irrelevant_params() -> None:
    before = {"Context": "runner", "Params": {"docker-context/tag": "ci", "inventory/x": 1}}
    noise = {"Context": "runner", "Params": {"docker-context/tag": "ci", "inventory/x": 2}}
    assert not relevant_change(before, noise)
    assert relevant_change(before, {**before, "Context": ""})
    assert relevant_change(before, {**before, "Params": {"docker-context/tag": "audit"}})
    assert relevant_change(before, {**before, "Profiles": ["ci-pool"]})
    assert relevant_change(before, {**before, "Params": "garbage"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    context=st.sampled_from(["", "runner", "other", "noimage", "unknown"]),
    params=st.dictionaries(
        st.sampled_from(
            [
                "docker-context/tag",
                "context-broker/tag",
                "docker-context/owner",
                "cluster/count",
                "x/y",
            ]
        ),
        json_values,
        max_size=5,
    ),
)
def test_translation_never_fails_other_than_bad_object(
    context: str, params: dict[str, Any]
) -> None:
    m = machine(Context=context, Params=params)
    try:
        w = wanted(m, CONTEXTS)
        count_of(m)
    except BadObject as exc:
        bad_key = exc.key
        assert bad_key == UUID
        return
    if w is not None:
        w.spec("tok", [])  # a wanted context always makes a valid spec


def test_coalescer_releases_latest_once_per_window() -> None:
    now = [0.0]
    c: Coalescer[int] = Coalescer(0.1, clock=lambda: now[0])
    for version in range(50):  # a burst of updates to one machine
        c.offer("m1", version)
        now[0] += 0.001
    c.offer("m2", 7)
    assert c.due() == []
    assert c.next_due_in() == pytest.approx(0.05)
    now[0] = 0.1
    assert c.due() == [("m1", 49)]
    now[0] = 0.2
    assert c.due() == [("m2", 7)]
    assert (c.offered, c.released, len(c)) == (51, 2, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcde"), st.integers(), st.floats(0, 0.05)), max_size=60)
)
def test_coalescer_property(events: list[tuple[str, int, float]]) -> None:
    """Whatever the sequence: each key's last item is released, never twice in one window."""
    now = [0.0]
    c: Coalescer[int] = Coalescer(0.1, clock=lambda: now[0])
    released: list[tuple[float, str, int]] = []
    latest: dict[str, int] = {}
    for key, item, gap in events:
        c.offer(key, item)
        latest[key] = item
        now[0] += gap
        released += [(now[0], k, v) for k, v in c.due()]
    now[0] += 1.0
    released += [(now[0], k, v) for k, v in c.due()]
    final = {}
    for _, k, v in released:
        final[k] = v
    assert final == latest
    for key in latest:
        times = [t for t, k, _ in released if k == key]
        assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(times))


def test_cluster_plan() -> None:
    from broker_bridge.clusters import member_object, plan

    def cluster(count: object, broker: str = "context-broker") -> Machine:
        params = {"resource/broker": broker, "docker-context/tag": "batch", "cluster/count": count}
        return Machine.model_validate(
            {"Uuid": UUID, "Name": "batch", "Context": "runner", "Params": params}
        )

    def members(*indexes: int) -> list[Machine]:
        return [Machine.model_validate({"Uuid": f"u{i}", "Name": f"batch-{i}"}) for i in indexes]

    grow = plan(cluster(5), members(1, 2), "context-broker")
    assert grow is not None
    assert (grow.create, grow.delete) == (["batch-3", "batch-4", "batch-5"], [])
    shrink = plan(cluster(2), members(1, 2, 3, 7), "context-broker")
    assert shrink is not None
    assert (shrink.create, shrink.delete, shrink.members) == (
        [],
        ["u7", "u3"],
        ["batch-1", "batch-2"],
    )
    gap = plan(cluster(3), members(1, 3), "context-broker")  # never reuses a newer index
    assert gap is not None
    assert gap.create == ["batch-4"]
    assert plan(cluster(3, broker="other"), [], "context-broker") is None
    with pytest.raises(BadObject, match="cluster/count"):
        plan(cluster("many"), [], "context-broker")
    new = member_object(cluster(1), "batch-1")
    assert new["Params"] == {"ctxpool/cluster": UUID, "docker-context/tag": "batch"}
    assert new["Context"] == "runner"


def test_container_params_and_context_meta_reach_the_spec() -> None:
    contexts = {
        "archived": Context.model_validate(
            {
                "Name": "archived",
                "Engine": "docker-context",
                "Image": "ansible-runner_v1.2.0",
                "Meta": {"Imagepull": "https://drp:8092/files/x.tar", "Checksum": "SHA256:AB"},
            }
        ),
        "own-agent": Context.model_validate(
            {
                "Name": "own-agent",
                "Engine": "docker-context",
                "Image": "a:1",
                "Meta": {"ctxpool/agent": "image"},
            }
        ),
    }
    m = machine(
        Context="archived",
        Params={
            "context/volumes": "type=bind,source=/srv/a,target=/a;type=tmpfs,target=/t",
            "context/publish-ports": ["20001:80", "20002:81"],
        },
    )
    target = wanted(m, contexts)
    assert target is not None
    spec = target.spec("tok", ["https://drp:8092"])
    assert spec.volumes == ["type=bind,source=/srv/a,target=/a", "type=tmpfs,target=/t"]
    assert spec.publish_ports == ["20001:80", "20002:81"]
    assert spec.image_pull == "https://drp:8092/files/x.tar"
    assert spec.image_checksum == "ab"
    assert spec.agent is True
    own = wanted(machine(Context="own-agent"), contexts)
    assert own is not None
    assert own.agent is False
    # a volume change changes the container (spec hash) and is a relevant update
    other = wanted(machine(Context="archived", Params={"context/volumes": "target=/x"}), contexts)
    assert other is not None
    assert other.spec("tok", []).spec_hash() != spec.spec_hash()
    assert relevant_change({"Params": {}}, {"Params": {"context/volumes": "target=/x"}})


def test_container_params_of_the_wrong_type_are_bad_objects() -> None:
    with pytest.raises(BadObject, match="context/volumes"):
        wanted(machine(Context="runner", Params={"context/volumes": 7}), CONTEXTS)
    bad_agent = {"x": Context.model_validate(
        {"Name": "x", "Engine": "docker-context", "Image": "a", "Meta": {"ctxpool/agent": "?"}}
    )}  # fmt: skip
    with pytest.raises(BadObject, match="inject"):
        wanted(machine(Context="x"), bad_agent)

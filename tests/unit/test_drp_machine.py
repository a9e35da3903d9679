"""A node's own DRP machine (:mod:`pool.node.drpmachine`): what it writes given the machine's
params (pure), and the calls it makes against the DRP simulator on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from broker_bridge.drpsim import DrpSim
from pool.drp.config import DrpConfig
from pool.drp.errors import DrpUnavailableError
from pool.drp.rest import DrpRest
from pool.drp.sync import TokenSource
from pool.errors import ConfigError
from pool.node.drpmachine import (
    DrpMachineMissingError,
    NodeMachine,
    changed_params,
    member_params_to_clear,
    node_params,
)

TAGS = ("docker-context/tags", "context-broker/tags")
NAMES = ("docker-context/member-name", "context-broker/member-name")


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    with DrpSim(seed=5) as s:
        yield s


def _rest(url: str, token: str = "sim-token", timeout_s: float = 5.0) -> DrpRest:
    return DrpRest(TokenSource(DrpConfig(url=url, token=token)), timeout_s)


def _writes(sim: DrpSim) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in list(sim.seen) if m in ("POST", "DELETE", "PUT", "PATCH")]


def test_node_params_carry_both_spellings() -> None:
    wanted = node_params("n1", ["ci", "batch", "ci"])
    assert wanted == {
        TAGS[0]: ["batch", "ci"],
        TAGS[1]: ["batch", "ci"],
        NAMES[0]: "n1",
        NAMES[1]: "n1",
    }


def test_only_params_that_differ_are_written() -> None:
    wanted = node_params("n1", {"ci"})
    assert changed_params(wanted, wanted) == {}
    current = {TAGS[0]: ["ci"], TAGS[1]: ["ci", "old"], NAMES[0]: "n1", "other/param": 1}
    assert changed_params(current, wanted) == {TAGS[1]: ["ci"], NAMES[1]: "n1"}
    assert changed_params({}, wanted) == wanted


def test_only_our_member_name_is_cleared() -> None:
    assert member_params_to_clear({NAMES[0]: "n1", NAMES[1]: "n1"}, "n1") == list(NAMES)
    assert member_params_to_clear({NAMES[0]: "n2", NAMES[1]: "n1"}, "n1") == [NAMES[1]]
    assert member_params_to_clear({TAGS[0]: ["ci"]}, "n1") == []


def test_asserts_params_by_name_writing_only_changes(sim: DrpSim) -> None:
    m = sim.create_machine("node-a", params={TAGS[0]: ["ci"], "keep": "me"})
    machine = NodeMachine(_rest(sim.url), "node-a")
    wrote = machine.assert_params(node_params("a", {"ci"}))
    assert wrote == {TAGS[1]: ["ci"], NAMES[0]: "a", NAMES[1]: "a"}
    params = (sim.get(m["Uuid"]) or {})["Params"]
    assert params == {TAGS[0]: ["ci"], TAGS[1]: ["ci"], NAMES[0]: "a", NAMES[1]: "a", "keep": "me"}
    assert any(p.startswith("/api/v3/machines?Name=node-a") for _, p, _ in sim.seen)
    assert len(_writes(sim)) == 3  # the tags already right were not written again

    sim.seen.clear()
    assert machine.assert_params(node_params("a", {"ci"})) == {}
    assert _writes(sim) == []  # nothing differs: only a read
    assert [p for _, p, _ in sim.seen] == [f"/api/v3/machines/{m['Uuid']}"]  # uuid kept

    sim.set_param(m["Uuid"], TAGS[0], ["audit"])  # someone changed it: put back
    assert machine.assert_params(node_params("a", {"ci"})) == {TAGS[0]: ["ci"]}

    assert machine.clear_member("a") == list(NAMES)
    params = (sim.get(m["Uuid"]) or {})["Params"]
    assert NAMES[0] not in params
    assert NAMES[1] not in params
    assert params[TAGS[0]] == ["ci"]  # tags stay


def test_machine_by_uuid_and_a_recreated_machine_is_found_again(sim: DrpSim) -> None:
    m = sim.create_machine("node-b")
    by_uuid = NodeMachine(_rest(sim.url), m["Uuid"])
    by_uuid.assert_params(node_params("b", {"ci"}))
    assert not any("Name=" in p for _, p, _ in sim.seen)  # a uuid is not looked up
    assert (sim.get(m["Uuid"]) or {})["Params"][NAMES[0]] == "b"

    by_name = NodeMachine(_rest(sim.url), "node-b")
    by_name.assert_params(node_params("b", {"ci"}))
    sim.delete_machine(m["Uuid"])
    again = sim.create_machine("node-b")
    by_name.assert_params(node_params("b", {"ci"}))
    assert by_name.uuid == again["Uuid"]
    assert (sim.get(again["Uuid"]) or {})["Params"][NAMES[1]] == "b"

    sim.delete_machine(again["Uuid"])
    with pytest.raises(DrpMachineMissingError, match="CTXPOOL_DRP_MACHINE") as gone:
        by_uuid.assert_params(node_params("b", {"ci"}))
    assert isinstance(gone.value, ConfigError)  # logged as an error by the step, no traceback


def test_a_missing_machine_is_a_clear_error(sim: DrpSim) -> None:
    with pytest.raises(DrpMachineMissingError, match="no DRP machine named 'ghost'"):
        NodeMachine(_rest(sim.url), "ghost").assert_params(node_params("g", {"ci"}))
    assert _writes(sim) == []


def test_unreachable_drp_and_tokens_never_show(sim: DrpSim) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DrpUnavailableError) as down:
        NodeMachine(_rest(f"http://127.0.0.1:{port}", "tok-s3cret"), "n").params()
    assert "tok-s3cret" not in str(down.value)
    assert down.value.__cause__ is None  # a requests error would hold the request

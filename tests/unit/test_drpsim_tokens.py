"""Machine tokens of the DRP simulator: accepted for their own machine, refused (403)
elsewhere, expired (401) after their TTL."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import requests

from broker_bridge.drpsim import DrpSim, TokenBook, permitted

UUID_A = "0f0e0d0c-0000-4000-8000-00000000000a"
UUID_B = "0f0e0d0c-0000-4000-8000-00000000000b"


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    with DrpSim(seed=2) as s:
        yield s


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_token_book_principals_and_expiry() -> None:
    clock = FakeClock()
    book = TokenBook("user-token", {"u": "p"}, clock=clock)
    token = book.issue_machine_token("machines", UUID_A, ttl_s=60)
    assert book.principal(f"Bearer {token}", None) == f"machine:machines/{UUID_A}"
    assert book.principal("", token) == f"machine:machines/{UUID_A}"  # ?token= (websocket)
    assert book.principal("Bearer user-token", None) == "token"
    basic = "Basic " + base64.b64encode(b"u:p").decode()
    assert book.principal(basic, None) == "u"
    assert book.principal("Basic " + base64.b64encode(b"u:wrong").decode(), None) is None
    assert book.principal("Basic %%%", None) is None
    assert book.principal("Bearer mt-forged", None) is None
    clock.now_s += 59.9
    assert book.principal(f"Bearer {token}", None) is not None
    clock.now_s += 0.1
    assert book.principal(f"Bearer {token}", None) is None  # expired
    with pytest.raises(ValueError, match="positive"):
        book.issue_machine_token("machines", UUID_A, ttl_s=0)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", f"/api/v3/machines/{UUID_A}/params/ctxpool-agent/seen", True),
        ("GET", f"/api/v3/machines/{UUID_A}", True),
        ("PATCH", f"/api/v3/machines/{UUID_A}", True),
        ("POST", f"/api/v3/machines/{UUID_B}/params/ctxpool-agent/seen", False),
        ("GET", f"/api/v3/machines/{UUID_A}x", False),  # a prefix is not the same machine
        ("GET", f"/api/v3/clusters/{UUID_A}", False),
        ("GET", "/api/v3/machines", False),
        ("GET", "/api/v3/ws", False),
        ("GET", "/api/v3/files/drpcli.amd64.linux", True),
        ("HEAD", "/api/v3/files/drpcli.amd64.linux", True),
        ("POST", "/api/v3/files/drpcli.amd64.linux", False),
        ("DELETE", "/api/v3/files/drpcli.amd64.linux", False),
    ],
)
def test_what_a_machine_token_permits(method: str, path: str, allowed: bool) -> None:
    assert permitted(f"machine:machines/{UUID_A}", method, path) is allowed
    assert permitted("token", method, path) is True
    assert permitted("rocketskates", method, path) is True


def _machine_token(sim: DrpSim, uuid: str, ttl_s: int = 600) -> str:
    reply = requests.get(
        f"{sim.url}/api/v3/machines/{uuid}/token",
        params={"ttl": ttl_s},
        headers={"Authorization": f"Bearer {sim.token}"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    token: str = reply.json()["Token"]
    return token


def test_a_machine_token_writes_its_own_params_only(sim: DrpSim) -> None:
    a = sim.create_machine("a")["Uuid"]
    b = sim.create_machine("b")["Uuid"]
    token = _machine_token(sim, a)
    bearer = {"Authorization": f"Bearer {token}"}
    own = requests.post(
        f"{sim.url}/api/v3/machines/{a}/params/ctxpool-agent/seen",
        json="here",
        headers=bearer,
        timeout=30,
    )
    assert (own.status_code, own.json()) == (200, "here")
    assert sim.get(a)["Params"]["ctxpool-agent/seen"] == "here"  # type: ignore[index]

    other = requests.post(
        f"{sim.url}/api/v3/machines/{b}/params/ctxpool-agent/seen",
        json="x",
        headers=bearer,
        timeout=30,
    )
    assert other.status_code == 403
    assert "ctxpool-agent/seen" not in sim.get(b)["Params"]  # type: ignore[index]
    listing = requests.get(f"{sim.url}/api/v3/machines", headers=bearer, timeout=30)
    assert listing.status_code == 403
    patch = requests.patch(
        f"{sim.url}/api/v3/machines/{b}",
        json=[{"op": "replace", "path": "/Context", "value": "x"}],
        headers=bearer,
        timeout=30,
    )
    assert patch.status_code == 403
    assert sim.get(b)["Context"] == ""  # type: ignore[index]
    drpcli = requests.get(f"{sim.url}/api/v3/files/drpcli.amd64.linux", headers=bearer, timeout=30)
    assert drpcli.status_code == 200


def test_machine_tokens_are_distinct_and_bad_ttls_refused(sim: DrpSim) -> None:
    a = sim.create_machine("a")["Uuid"]
    assert _machine_token(sim, a) != _machine_token(sim, a)
    bad = requests.get(
        f"{sim.url}/api/v3/machines/{a}/token",
        params={"ttl": "-5"},
        headers={"Authorization": f"Bearer {sim.token}"},
        timeout=30,
    )
    assert bad.status_code == 422


def test_an_expired_machine_token_is_unauthorized() -> None:
    clock = FakeClock()
    with DrpSim(clock=clock) as sim:
        a = sim.create_machine("a")["Uuid"]
        token = _machine_token(sim, a, ttl_s=30)
        url = f"{sim.url}/api/v3/machines/{a}"
        assert (
            requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code
            == 200
        )
        clock.now_s += 30
        assert (
            requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code
            == 401
        )

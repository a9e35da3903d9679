"""The DRP client core (:mod:`pool.drp`): configuration, errors, token lifetime, and the nodes'
write-back against the DRP simulator on loopback. Assertions are on what DRP saw."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError

from broker_bridge.drpsim import DEFAULT_USERS, DrpSim
from pool.calls import drp as drpcalls
from pool.drp import paths
from pool.drp.client import DrpClient
from pool.drp.config import DrpConfig
from pool.drp.errors import (
    DrpAuthError,
    DrpConfigError,
    DrpError,
    DrpNotFoundError,
    DrpUnavailableError,
    error_for_status,
)
from pool.drp.sync import TokenSource
from pool.errors import ConfigError
from pool.limits.task import Deferred
from pool.runtime import Runtime
from pool.settings import Settings

USER, PASSWORD = next(iter(DEFAULT_USERS.items()))
TOKEN_PATH = f"/api/v3/users/{USER}/token"


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    with DrpSim(seed=3) as s:
        yield s


def _user_config(sim: DrpSim, **more: Any) -> DrpConfig:
    return DrpConfig(url=sim.url, username=USER, password=PASSWORD, **more)


def _token_fetches(sim: DrpSim) -> list[tuple[str, str, str]]:
    return [r for r in list(sim.seen) if r[1].startswith(TOKEN_PATH)]


def _api_calls(sim: DrpSim) -> list[tuple[str, str, str]]:
    """Every call but the user token calls."""
    return [r for r in list(sim.seen) if not r[1].startswith(TOKEN_PATH)]


def _machines(sim: DrpSim, n: int) -> list[str]:
    return [sim.create_machine(f"m{i}")["Uuid"] for i in range(n)]


# ---- configuration and errors -----------------------------------------------------------------


def test_config_validates_with_clear_messages_and_never_shows_secrets(tmp_path: Path) -> None:
    cfg = DrpConfig(url="https://drp:8092/", username="u", password="pw-s3cret")
    assert cfg.url == "https://drp:8092"
    assert cfg.renewable
    assert "pw-s3cret" not in repr(cfg)
    assert "pw-s3cret" not in str(cfg.model_dump())
    token_cfg = DrpConfig(url="https://drp", token=" tok-s3cret\n")  # a token file's newline
    assert token_cfg.token is not None
    assert token_cfg.token.get_secret_value() == "tok-s3cret"
    assert not token_cfg.renewable
    assert "tok-s3cret" not in repr(token_cfg)

    with pytest.raises(DrpConfigError, match="CTXPOOL_DRP_URL is not set") as missing:
        DrpConfig.from_settings(Settings())
    assert isinstance(missing.value, ConfigError)
    with pytest.raises(DrpConfigError, match="credentials missing"):
        DrpConfig.from_settings(Settings(drp_url="https://drp"))
    with pytest.raises(DrpConfigError, match="needs a password"):
        DrpConfig.from_settings(Settings(drp_url="https://drp", drp_username="u"))
    with pytest.raises(DrpConfigError, match="CTXPOOL_DRP_URL: must be https://") as bad_url:
        DrpConfig.from_settings(Settings(drp_url="drp:8092", drp_token=SecretStr("tok-s3cret")))
    assert "tok-s3cret" not in str(bad_url.value)
    with pytest.raises(DrpConfigError, match="CTXPOOL_DRP_TOKEN: must be one word") as bad:
        DrpConfig.from_settings(Settings(drp_url="https://drp", drp_token=SecretStr("tok s3cret")))
    assert "s3cret" not in str(bad.value)
    with pytest.raises(DrpConfigError, match=r"CTXPOOL_DRP_CA_BUNDLE: /no/ca is not a file"):
        DrpConfig.from_settings(
            Settings(drp_url="https://drp", drp_token=SecretStr("t"), drp_ca_bundle="/no/ca")
        )
    with pytest.raises(ValidationError) as direct:
        DrpConfig(url="https://drp", token="tok s3cret")
    assert "s3cret" not in str(direct.value)

    bundle = tmp_path / "ca.pem"
    bundle.write_text("not used here")
    with_ca = DrpConfig.from_settings(
        Settings(drp_url="https://drp", drp_token=SecretStr("t"), drp_ca_bundle=str(bundle))
    )
    assert with_ca.requests_verify() == str(bundle)
    assert with_ca.model_copy(update={"verify_tls": False}).requests_verify() is False


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (200, None),
        (204, None),
        (401, DrpAuthError),
        (403, DrpAuthError),
        (404, DrpNotFoundError),
        (409, DrpError),
        (500, DrpUnavailableError),
        (503, DrpUnavailableError),
    ],
)
def test_status_maps_to_one_error_tree(status: int, error: type[DrpError] | None) -> None:
    got = error_for_status(status, "GET", "/api/v3/machines", "body text")
    if error is None:
        assert got is None
        return
    assert type(got) is error
    assert got.status == status
    assert "GET /api/v3/machines" in str(got)


def test_paths_quote_each_segment_once() -> None:
    assert paths.machine_param("3f1c", "docker-context/owner") == (
        "/api/v3/machines/3f1c/params/docker-context%2Fowner"
    )
    assert paths.user_token("a b/c", 60) == "/api/v3/users/a%20b%2Fc/token?ttl=60"
    assert paths.page("machines", "slim=Meta", 500, 500) == (
        "/api/v3/machines?slim=Meta&offset=500&limit=500"
    )
    assert paths.object_token("machines", "m/1", 5) == "/api/v3/machines/m%2F1/token?ttl=5"


# ---- the nodes' write-back: one token per process, Bearer on every call ------------------------


def test_write_back_makes_many_calls_with_one_token_fetch(sim: DrpSim) -> None:
    """8 threads x 5 calls share one user token: DRP sees one Basic call (the token call) and
    Bearer on all 40 write-backs."""
    uuids = _machines(sim, 8)
    tokens = TokenSource(_user_config(sim))
    results: list[Any] = []
    start = threading.Barrier(len(uuids))

    def write(uuid: str) -> None:
        start.wait()
        for i in range(5):
            call = drpcalls.set_param(uuid, "docker-context/owner", f"node-{i}")
            results.append(drpcalls.send(call, tokens, "t", 1))

    threads = [threading.Thread(target=write, args=(u,)) for u in uuids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [r.status for r in results] == [200] * 40
    assert all(sim.get(u)["Params"]["docker-context/owner"] == "node-4" for u in uuids)
    [(method, path, auth)] = _token_fetches(sim)
    assert (method, path) == ("GET", f"{TOKEN_PATH}?ttl=3600")
    assert auth.startswith("Basic ")
    calls = _api_calls(sim)
    assert len(calls) == 40
    assert {auth for _, _, auth in calls} == {f"Bearer {sim.token}"}  # never Basic


def test_user_token_is_renewed_at_80_percent_of_its_ttl(sim: DrpSim) -> None:
    uuid = _machines(sim, 1)[0]
    now = [1000.0]
    tokens = TokenSource(_user_config(sim, user_token_ttl_s=100), clock=lambda: now[0])
    call = drpcalls.set_param(uuid, "docker-context/owner", "node-a")
    for at in (1000.0, 1050.0, 1079.0):
        now[0] = at
        drpcalls.send(call, tokens, "t", 1)
    assert len(_token_fetches(sim)) == 1
    now[0] = 1081.0  # past 80 of 100 seconds
    drpcalls.send(call, tokens, "t", 1)
    fetches = _token_fetches(sim)
    assert [p for _, p, _ in fetches] == [f"{TOKEN_PATH}?ttl=100"] * 2
    assert len(_api_calls(sim)) == 4


def test_a_401_renews_the_user_token_once_and_the_call_succeeds(
    sim: DrpSim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    uuid = _machines(sim, 1)[0]
    tokens = TokenSource(_user_config(sim))
    call = drpcalls.set_param(uuid, "docker-context/owner", "node-a")
    drpcalls.send(call, tokens, "t", 1)
    old = sim.token
    sim.token = "rotated-token"  # DRP forgot the old token (restart, revoked, expired early)
    result = drpcalls.send(call.model_copy(update={"body": "node-b"}), tokens, "t", 1)
    assert (result.outcome, result.status) == ("ok", 200)
    assert sim.get(uuid)["Params"]["docker-context/owner"] == "node-b"
    assert [(m, a) for m, _, a in sim.seen] == [
        ("GET", sim.seen[0][2]),  # the first token fetch (Basic)
        ("POST", f"Bearer {old}"),
        ("POST", f"Bearer {old}"),  # refused with 401
        ("GET", sim.seen[0][2]),  # one renewal
        ("POST", "Bearer rotated-token"),
    ]
    assert sim.seen[0][2].startswith("Basic ")
    for secret in (old, "rotated-token", PASSWORD, sim.seen[0][2][6:]):
        assert secret not in caplog.text


class _StaleTokenSim(DrpSim):
    """Hands out a token it then refuses (a DRP whose tokens are never accepted)."""

    async def _user_token(self, request: web.Request) -> web.Response:
        return web.json_response({"Token": "never-accepted"})


def test_a_refused_renewed_token_is_not_renewed_again() -> None:
    with _StaleTokenSim(seed=1) as sim:
        uuid = _machines(sim, 1)[0]
        tokens = TokenSource(_user_config(sim))
        call = drpcalls.set_param(uuid, "docker-context/owner", "node-a")
        result = drpcalls.send(call, tokens, "t", 1)
        assert (result.outcome, result.status) == ("failed", 401)
        assert len(_token_fetches(sim)) == 2  # the first fetch and exactly one renewal
        assert [a for _, _, a in _api_calls(sim)] == ["Bearer never-accepted"] * 2


def test_wrong_password_fails_the_call_after_one_renewal_attempt(sim: DrpSim) -> None:
    uuid = _machines(sim, 1)[0]
    tokens = TokenSource(_user_config(sim))
    call = drpcalls.set_param(uuid, "docker-context/owner", "node-a")
    drpcalls.send(call, tokens, "t", 1)
    sim.token, sim.users[USER] = "rotated-token", "changed"
    with pytest.raises(DrpAuthError) as refused:
        drpcalls.send(call, tokens, "t", 1)
    assert refused.value.status == 401
    assert PASSWORD not in str(refused.value)
    assert len(_token_fetches(sim)) == 2
    assert len(_api_calls(sim)) == 2  # the first call, and the refused one: no retry loop


def test_a_configured_token_is_never_exchanged(sim: DrpSim) -> None:
    uuids = _machines(sim, 3)
    tokens = TokenSource(DrpConfig(url=sim.url, token=sim.token))
    for uuid in uuids:
        drpcalls.send(drpcalls.set_param(uuid, "docker-context/owner", "n"), tokens, "t", 1)
    sim.token = "rotated-token"
    refused = drpcalls.send(drpcalls.set_param(uuids[0], "x", "y"), tokens, "t", 1)
    assert (refused.outcome, refused.status) == ("failed", 401)
    assert _token_fetches(sim) == []
    assert [a for _, _, a in _api_calls(sim)] == ["Bearer sim-token"] * 4  # one try on the 401


def test_unreachable_drp_while_fetching_a_token_defers_the_call() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    config = DrpConfig(url=f"http://127.0.0.1:{port}", username=USER, password=PASSWORD)
    call = drpcalls.set_param("m", "docker-context/owner", "n")
    with pytest.raises(Deferred, match="no DRP token: DRP GET /api/v3/users/") as deferred:
        drpcalls.send(call, TokenSource(config), "t", 1)
    assert PASSWORD not in str(deferred.value)


class _App:
    def __init__(self, settings: Settings) -> None:
        self.ctxpool_settings = settings
        self.tasks: dict[str, Any] = {}

    def send_task(self, name: str, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")

    def connection_for_read(self) -> Any:
        raise AssertionError("not used")


def test_runtime_builds_one_token_source_per_process(sim: DrpSim) -> None:
    """Built on first use, shared by the process's calls, dropped after a fork (the child
    fetches its own token)."""
    uuid = _machines(sim, 1)[0]
    settings = Settings(drp_url=sim.url, drp_username=USER, drp_password=SecretStr(PASSWORD))
    rt = Runtime(_App(settings))
    call = drpcalls.set_param(uuid, "docker-context/owner", "node-a")
    assert _token_fetches(sim) == []  # lazily: nothing at construction
    for _ in range(3):
        drpcalls.send(call, rt.drp_tokens, "t", 1)
    assert rt.drp_tokens is rt.drp_tokens
    assert len(_token_fetches(sim)) == 1
    rt.reset_clients()  # what a forked child does
    drpcalls.send(call, rt.drp_tokens, "t", 1)
    assert len(_token_fetches(sim)) == 2
    with pytest.raises(DrpConfigError, match="credentials missing"):
        _ = Runtime(_App(Settings(drp_url=sim.url))).drp_tokens


# ---- the bridge's async client on the same core -----------------------------------------------


def test_bridge_client_renews_a_refused_user_token_once(sim: DrpSim) -> None:
    sim.put_context("runner", engine="docker-context", image="img:1")

    async def scenario() -> list[str]:
        client = DrpClient(_user_config(sim))
        try:
            await client.contexts()
            await client.contexts()
            sim.token = "rotated-token"
            names = sorted(await client.contexts())
            sim.users[USER] = "changed"
            sim.token = "rotated-again"
            with pytest.raises(DrpAuthError):
                await client.contexts()
            return names
        finally:
            await client.close()

    assert asyncio.run(scenario()) == ["runner"]
    assert len(_token_fetches(sim)) == 3  # first, renewal after the 401, one failed renewal
    assert [a for _, _, a in _api_calls(sim)] == [
        "Bearer sim-token",
        "Bearer sim-token",
        "Bearer sim-token",  # refused
        "Bearer rotated-token",
        "Bearer rotated-token",  # refused; the renewal fails: no second retry
    ]

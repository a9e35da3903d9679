"""HTTP call classification and DRP call building (a real loopback server, no workers)."""

from __future__ import annotations

import email.utils
import random
import socket

import pytest
from pydantic import ValidationError

from broker_bridge.drpsim import DrpSim
from pool.calls import drp as drpcalls
from pool.calls.http import (
    MAX_RETRY_AFTER_S,
    HttpRequest,
    backoff_s,
    perform,
    redact_query,
    retry_after_s,
)
from pool.drp.config import DrpConfig
from pool.drp.sync import TokenSource
from pool.limits.task import Deferred
from tests.support import RecordingServer


def test_retry_after_forms() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    assert retry_after_s("999999") == MAX_RETRY_AFTER_S
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_s(date, now=1_000_000) == pytest.approx(30.0)
    assert retry_after_s(date, now=2_000_000) == 0.0  # a date in the past: now


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    assert 0.5 <= backoff_s(1, rng) <= 1.0
    assert 4.0 <= backoff_s(4, rng) <= 8.0
    assert 30.0 <= backoff_s(40, rng) <= 60.0


def test_request_validation() -> None:
    req = HttpRequest.model_validate(
        {"method": "post", "url": "https://bmc-7.lab:8443/redfish/v1?x=1", "json": {"a": 1}}
    )
    assert (req.method, req.host, req.json_body) == ("POST", "bmc-7.lab:8443", {"a": 1})
    assert req.key_fields()["hostname"] == "bmc-7.lab"
    for bad in ({"url": "ftp://x/"}, {"url": "/relative"}, {"url": "http://x/", "method": "BREW"}):
        with pytest.raises(ValidationError):
            HttpRequest.model_validate(bad)
    assert redact_query("https://u:pw@h:1/p?token=s#f") == "https://h:1/p"


def test_perform_classifies_responses() -> None:
    with RecordingServer(throttle_first=1, retry_after_s=3) as srv:
        req = HttpRequest(url=f"{srv.url}/a")
        with pytest.raises(Deferred) as deferred:
            perform(req, "t1", 1)
        assert deferred.value.delay_s == 3.0
        assert "429" in deferred.value.reason
        ok = perform(req, "t1", 2)
        assert (ok.outcome, ok.status, ok.attempts, ok.body) == ("ok", 200, 2, '{"ok": true}')


def test_perform_connection_refused_is_deferred() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    with pytest.raises(Deferred, match="ConnectionError"):
        perform(HttpRequest(url=f"http://127.0.0.1:{port}/", timeout_s=2), "t", 1)


def test_drp_call_uses_worker_credentials() -> None:
    """The message carries no credentials; the worker adds its URL and a Bearer token (a user
    token for a user and password: Basic is never sent with the call itself)."""
    call = drpcalls.set_param("3f1c-uuid", "docker-context/owner", "node-a")
    assert call.path == "/api/v3/machines/3f1c-uuid/params/docker-context%2Fowner"
    config = DrpConfig(url="https://drp:8092/", token="s3cret")
    assert "s3cret" not in call.model_dump_json()  # credentials never travel in the message
    req = drpcalls.to_http(call, config, "s3cret")
    assert req.url == "https://drp:8092/api/v3/machines/3f1c-uuid/params/docker-context%2Fowner"
    assert req.headers["Authorization"] == "Bearer s3cret"
    assert (req.limit, req.json_body) == ("drp-api", "node-a")
    patch = drpcalls.patch_machine("m", [{"op": "test", "path": "/Context", "value": "x"}])
    assert drpcalls.to_http(patch, config, "t").headers["Content-Type"].endswith("patch+json")

    with DrpSim() as sim:
        uuid = sim.create_machine("m1")["Uuid"]
        user, password = next(iter(sim.users.items()))
        tokens = TokenSource(DrpConfig(url=sim.url, username=user, password=password))
        call = drpcalls.set_param(uuid, "docker-context/owner", "node-a")
        result = drpcalls.send(call, tokens, "t", 1)
        assert (result.outcome, result.status) == ("ok", 200)
        assert sim.get(uuid)["Params"]["docker-context/owner"] == "node-a"
        [(_, _, basic), (method, _, bearer)] = sim.seen  # the token call, then the write-back
        assert basic.startswith("Basic ")
        assert (method, bearer) == ("POST", f"Bearer {sim.token}")


def test_logged_form_of_a_request_masks_secrets() -> None:
    from tasks.integrations import redacted_request

    req = HttpRequest(
        method="POST",
        url="https://u:pw@api.example/v1/x?token=abc",
        headers={"Authorization": "Bearer s3cret", "Content-Type": "application/json"},
        params={"api_key": "k"},
        json={"password": "hunter2"},
    )
    shown = repr(redacted_request(req))
    for secret in ("s3cret", "abc", "pw", "hunter2", "'k'"):
        assert secret not in shown
    assert "application/json" in shown
    assert "https://api.example/v1/x" in shown

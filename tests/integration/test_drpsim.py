"""The DRP simulator's fidelity (its real servers on loopback), driven by RackN's generated
client (``drppy-client``) and by the bridge's own client: same paths, same JSON keys, same
auth, same events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from broker_bridge.drpsim import DrpSim
from pool.drp.client import DrpClient
from pool.drp.config import DrpConfig
from pool.drp.errors import DrpAuthError, DrpNotFoundError

pytestmark = [pytest.mark.integration, pytest.mark.no_broker]

drppy = pytest.importorskip("drppy_client", reason="drppy-client is a dev dependency")
from drppy_client.api.contexts_api import ContextsApi  # noqa: E402
from drppy_client.api.machines_api import MachinesApi  # noqa: E402
from drppy_client.api_client import ApiClient  # noqa: E402
from drppy_client.configuration import Configuration  # noqa: E402
from drppy_client.rest import ApiException  # noqa: E402


@pytest.fixture
def sim() -> Iterator[DrpSim]:
    with DrpSim(seed=1) as s:
        yield s


def _api(sim: DrpSim, token: str | None = None) -> ApiClient:
    cfg = Configuration()
    cfg.host = sim.url + "/api/v3"
    cfg.api_key["Authorization"] = token or sim.token
    cfg.api_key_prefix["Authorization"] = "Bearer"
    return ApiClient(cfg)


def test_drppy_client_reads_and_writes_the_simulator(sim: DrpSim) -> None:
    sim.put_context("runner", engine="docker-context", image="drp/agent:v4")
    made = sim.create_machine("m1", "runner", {"docker-context/tag": "ci"})
    api = MachinesApi(_api(sim))
    listed = api.list_machines()
    assert [m.uuid for m in listed] == [made["Uuid"]]
    m = api.get_machine(made["Uuid"])
    assert (m.name, m.context, m.params) == ("m1", "runner", {"docker-context/tag": "ci"})
    assert m.meta == {"BaseContext": "runner"}
    api.post_machine_param("node-a", made["Uuid"], "docker-context/owner")
    assert sim.get(made["Uuid"])["Params"]["docker-context/owner"] == "node-a"
    patched = api.patch_machine(
        [
            {"op": "test", "path": "/Context", "value": "runner"},
            {"op": "replace", "path": "/Context", "value": ""},
        ],
        made["Uuid"],
    )
    assert patched.context == ""
    with pytest.raises(ApiException) as failed:
        api.patch_machine([{"op": "test", "path": "/Context", "value": "runner"}], made["Uuid"])
    assert failed.value.status == 409
    token = api.get_machine_token(made["Uuid"], ttl=600)
    assert token.token.startswith("mt-")
    ctx = ContextsApi(_api(sim)).list_contexts()
    assert [(c.name, c.engine, c.image) for c in ctx] == [
        ("runner", "docker-context", "drp/agent:v4")
    ]
    with pytest.raises(ApiException) as denied:
        MachinesApi(_api(sim, token="wrong")).list_machines()
    assert denied.value.status == 401


def test_bridge_client_paging_auth_and_events(sim: DrpSim) -> None:
    sim.put_context("runner", engine="docker-context", image="img:1")
    for i in range(7):
        sim.create_machine(f"m{i}", "runner")

    async def scenario() -> dict[str, Any]:
        basic = DrpClient(DrpConfig(url=sim.url, username="rocketskates", password="r0cketsk8ts"))
        out: dict[str, Any] = {}
        try:
            pages = [p async for p in basic.list_pages("machines", "slim=Meta", page_size=3)]
            out["pages"] = [len(p) for p in pages]
            out["contexts"] = sorted(await basic.contexts())
            with pytest.raises(DrpNotFoundError):
                await basic.machine_token("no-such-machine", 60)
            frames: list[str] = []
            registered = asyncio.Event()

            async def consume() -> None:
                async for text in basic.events(on_registered=registered.set):
                    frames.append(text)
                    if len(frames) == 2:
                        return

            task = asyncio.ensure_future(consume())
            await asyncio.wait_for(registered.wait(), 10)
            await asyncio.to_thread(sim.create_machine, "late", "runner")
            await asyncio.to_thread(sim.put_context, "other", "x", "img:2")
            await asyncio.wait_for(task, 10)
            out["events"] = [json.loads(f) for f in frames]
        finally:
            await basic.close()
        bad = DrpClient(DrpConfig(url=sim.url, token="wrong"))
        try:
            with pytest.raises(DrpAuthError):
                await bad.contexts()
        finally:
            await bad.close()
        return out

    out = asyncio.run(scenario())
    assert out["pages"] == [3, 3, 1]
    assert out["contexts"] == ["runner"]
    first, second = out["events"]
    assert (first["Type"], first["Action"], first["Object"]["Name"]) == (
        "machines",
        "create",
        "late",
    )
    assert set(first) == {"Time", "Type", "Action", "Key", "Principal", "Object", "Original"}
    assert (second["Type"], second["Key"]) == ("contexts", "other")


def test_simulator_drops_the_share_it_is_told() -> None:
    with DrpSim(drop_share=0.3, seed=7) as sim:

        async def listen() -> int:
            client = DrpClient(DrpConfig(url=sim.url, token=sim.token))
            got = 0
            registered = asyncio.Event()
            try:

                async def consume() -> None:
                    nonlocal got
                    async for _ in client.events(on_registered=registered.set):
                        got += 1

                task = asyncio.ensure_future(consume())
                await asyncio.wait_for(registered.wait(), 10)
                await asyncio.to_thread(lambda: [sim.create_machine(f"m{i}") for i in range(400)])
                await asyncio.sleep(1)
                task.cancel()
            finally:
                await client.close()
            return got

        got = asyncio.run(listen())
        assert got + sim.events_dropped == 400
        assert 0.2 < sim.events_dropped / 400 < 0.4


def test_bridge_reads_tags_from_profiles_and_backs_off_on_401(sim: DrpSim) -> None:
    """A tag set on a profile reaches the context (events carry only the machine's own
    params, so the bridge reads the aggregated machine). With bad credentials the bridge
    logs, backs off and does not hammer DRP."""
    from broker_bridge.bridge import Bridge, BridgeConfig
    from tests.bridge_fakes import MemSink

    sim.put_context("runner", engine="docker-context", image="img:1")
    sim.put_profile("ci-pool", {"docker-context/tag": "ci"})

    async def scenario() -> tuple[MemSink, int]:
        client = DrpClient(DrpConfig(url=sim.url, token=sim.token))
        sink = MemSink()
        bridge = Bridge(client, sink, BridgeConfig(coalesce_s=0.05, resync_s=3600))
        stop = asyncio.Event()
        run = asyncio.ensure_future(bridge.run(stop))
        try:
            await asyncio.sleep(0.5)  # connected, registered, first resync done
            made = await asyncio.to_thread(sim.create_machine, "m1", "runner")
            await asyncio.to_thread(sim.update_machine, made["Uuid"], Profiles=["ci-pool"])
            for _ in range(100):
                if sink.present():
                    break
                await asyncio.sleep(0.05)
            sim.fail_auth = True
            sim.cut_websockets()
            before = sim.requests
            await asyncio.sleep(3)
            hammering = sim.requests - before
        finally:
            stop.set()
            await run
            await client.close()
        return sink, hammering

    sink, requests_while_refused = asyncio.run(scenario())
    assert list(sink.present().values()) == ["runner|img:1|ci"]
    assert requests_while_refused <= 6  # backoff (1 s doubling), not a busy loop

"""Events/s the bridge ingests from a websocket replay of DRP machine events, next to a naive
loop that sends one Celery message (``apply_async``) per event. Same run, same replay.

The replay is realistic: ``--machines`` machine objects of a few KB each (inventory params,
Meta, Tasks ...), ``--updates`` events per machine, interleaved; most updates change
inventory params (irrelevant to the context), some change the machine's tag. A loopback
websocket server replays them as fast as the reader takes them and answers the REST calls the
bridge makes (machine tokens). The bridge runs as in production (real client, coalescing,
writes to Redis through the pool's API, nudges to the broker); the clock stops when the
last event has been taken in and every write has finished.

A second replay lists ``--resync-machines`` machines (DRP's machine objects, slimmed as the
bridge asks) and serves their tokens. The bridge resyncs them twice: first into an empty store
(every machine new: a token each, a write each), then again (every machine unchanged). Both
are divided by the time to only list the same machines from the same replay in the same run
(medians of three unchanged resyncs and of four listings, interleaved).

Needs a Redis on CTXPOOL_TEST_REDIS_URL (default redis://127.0.0.1:6379/15; it is flushed).

    python bench/bridge.py [--machines 200] [--updates 50] [--window-ms 250]
                           [--resync-machines 10000]

The last line reads ``events_per_s=<bridge events/s> ratio=<bridge/naive>
resync_ratio=<unchanged resync / listing> first_resync_ratio=<first resync / listing>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import secrets
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web

from broker_bridge.bridge import Bridge
from broker_bridge.config import BridgeConfig
from broker_bridge.drpsim import new_machine
from broker_bridge.main import pool_sink
from broker_bridge.models import Context
from broker_bridge.resync import SLIM_QUERY
from pool.appconfig import create_app
from pool.contexts.models import Nudge
from pool.drp.client import DrpClient
from pool.drp.config import DrpConfig
from pool.queues import RECONCILE_TASK
from pool.settings import Settings
from tests import support

TOKEN = "bench-token"  # noqa: S105 - the replay server's test credential


def realistic_machine(i: int, context: str) -> dict[str, Any]:
    m = new_machine(f"node-{i:05d}", context, {"docker-context/tag": "bench"})
    m["Params"].update(
        {
            f"inventory/disk{d}": {
                "Size": 960197124096,
                "Model": "SAMSUNG MZ7LH960",
                "Serial": secrets.token_hex(8),
            }
            for d in range(6)
        }
    )
    m["Params"]["inventory/NICInfo"] = {
        f"eno{n}": {"MAC": secrets.token_hex(6), "Speed": 25000, "Driver": "mlx5_core"}
        for n in range(4)
    }
    m["Params"]["inventory/CPUs"] = {"Model": "AMD EPYC 7543 32-Core", "Count": 2, "Cores": 64}
    m["Meta"].update(
        {"color": "green", "icon": "server", "feature-flags": "change-stage-v2,sane-exit-codes"}
    )
    m["Tasks"] = [f"bootstrap-{t}" for t in range(12)]
    return m


def build_events(
    machines: int, updates: int, context: str, seed: int = 1
) -> tuple[list[str], list[dict[str, Any]]]:
    rng = random.Random(seed)
    objs = [realistic_machine(i, context) for i in range(machines)]
    events = []
    for obj in objs:
        events.append(
            json.dumps(
                {
                    "Time": "t",
                    "Type": "machines",
                    "Action": "create",
                    "Key": obj["Uuid"],
                    "Principal": "runner",
                    "Object": obj,
                    "Original": None,
                }
            )
        )
    order = [i for i in range(machines) for _ in range(updates - 1)]
    rng.shuffle(order)
    for i in order:
        obj = objs[i]
        before = json.loads(json.dumps(obj))
        if rng.random() < 0.1:
            obj["Params"]["docker-context/tag"] = rng.choice(["bench", "bench2"])
        else:
            obj["Params"]["inventory/seen"] = rng.random()
        events.append(
            json.dumps(
                {
                    "Time": "t",
                    "Type": "machines",
                    "Action": rng.choice(["save", "update"]),
                    "Key": obj["Uuid"],
                    "Principal": "runner",
                    "Object": obj,
                    "Original": before,
                }
            )
        )
    return events, objs


class Replay:
    """Websocket replay + the REST calls the bridge makes, on loopback, in its own process
    (as DRP is): the bridge's process does only the bridge's work."""

    def __init__(
        self, machines: int, updates: int, limit: int | None = None, listing: int = 0
    ) -> None:
        self.args = (machines, updates, limit, listing)
        self.port = 0
        self.proc: multiprocessing.Process | None = None

    def start(self) -> Replay:
        ports: multiprocessing.Queue[int] = multiprocessing.Queue()
        self.proc = multiprocessing.Process(target=_serve, args=(*self.args, ports), daemon=True)
        self.proc.start()
        self.port = ports.get(timeout=60)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def listed_machine(i: int) -> dict[str, Any]:
    """A machine as DRP lists it for the bridge (``slim=Meta``, only the asked-for params)."""
    m = new_machine(f"listed-{i:05d}", "bench", {"docker-context/tag": "bench"})
    m["Uuid"] = f"00000000-0000-4000-8000-{i:012d}"
    del m["Meta"]
    return m


def _serve(machines: int, updates: int, limit: int | None, listing: int, ports: Any) -> None:
    events, _ = build_events(machines, updates, "bench")
    events = events[:limit] if limit else events
    listed = [listed_machine(i) for i in range(listing)]

    async def machines_list(request: web.Request) -> web.Response:
        offset = int(request.query.get("offset", 0))
        size = int(request.query.get("limit", 0) or len(listed))
        return web.json_response(listed[offset : offset + size])

    async def empty(request: web.Request) -> web.Response:
        return web.json_response([])

    context = {"Name": "bench", "Engine": "docker-context", "Image": "bench/agent:1"}

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        acks = 0
        async for msg in sock:
            await sock.send_str(
                json.dumps({"Type": "websocket", "Action": "register", "Key": msg.data})
            )
            acks += 1
            if acks == 4:
                break
        for text in events:
            await sock.send_str(text)
        await sock.close()
        return sock

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"Token": "mt-" + request.match_info["uuid"][:8]})

    async def contexts(request: web.Request) -> web.Response:
        return web.json_response([context])

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/api/v3/ws", ws)
        app.router.add_get("/api/v3/contexts", contexts)
        app.router.add_get("/api/v3/machines/{uuid}/token", token)
        app.router.add_get("/api/v3/machines", machines_list)
        app.router.add_get("/api/v3/clusters", empty)
        app.router.add_get("/api/v3/resource_brokers", empty)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    asyncio.run(main())


async def run_bridge(
    replay: Replay, settings: Settings, window_s: float
) -> tuple[float, Bridge, Counter[str]]:
    app = create_app()
    app.use_settings(settings)
    sink = pool_sink(app)
    nudges: Counter[str] = Counter()
    real_publish = sink.api.publish_many

    def counting_publish(batch: Sequence[tuple[Nudge, str]]) -> None:
        nudges.update(nudge.uuid for nudge, _ in batch)
        real_publish(batch)

    sink.api.publish_many = counting_publish
    client = DrpClient(DrpConfig(url=replay.url, token=TOKEN))
    bridge = Bridge(client, sink, BridgeConfig(coalesce_s=window_s, endpoints=(replay.url,)))
    bridge.contexts = {
        "bench": Context(name="bench", engine="docker-context", image="bench/agent:1")
    }
    stop = asyncio.Event()

    async def flusher() -> None:  # the bridge's flush loop, without its supervision
        while not stop.is_set():
            await bridge.flush()
            await asyncio.sleep(window_s / 4)

    flushing = asyncio.ensure_future(flusher())
    start = time.perf_counter()
    async for text in client.events():
        bridge.handle_text(text)
        if bridge.stats["events"] % 256 == 0:
            await asyncio.sleep(0)  # as the real loop does between frames: let writes progress
    await bridge.drain()
    elapsed = time.perf_counter() - start
    stop.set()
    await flushing
    await client.close()
    app.close()
    return elapsed, bridge, nudges


async def list_only(client: DrpClient, page_size: int) -> tuple[float, int]:
    """Time to only list the machines, as a resync asks for them."""
    start = time.perf_counter()
    count = 0
    async for page in client.list_pages("machines", SLIM_QUERY, page_size):
        count += len(page)
    return time.perf_counter() - start, count


async def run_resync(
    replay: Replay, settings: Settings, rounds: int = 3
) -> tuple[float, float, float, float]:
    """A first resync of the replay's listing into an empty store (every context written)
    while a ticker measures how long the event loop ever stalls; then ``rounds`` resyncs
    that find every context up to date, each after a listing of the same machines alone.

    Returns:
        (first resync, median unchanged resync, longest stall, median listing), seconds.
    """
    app = create_app()
    app.use_settings(settings)
    client = DrpClient(DrpConfig(url=replay.url, token=TOKEN))
    config = BridgeConfig(endpoints=(replay.url,))
    bridge = Bridge(client, pool_sink(app), config)
    listings = [(await list_only(client, config.page_size))[0]]
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        while not done.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - start - 0.01)

    tick = asyncio.ensure_future(ticker())
    start = time.perf_counter()
    report = await bridge.resync()
    first = time.perf_counter() - start
    done.set()
    await tick
    assert report["applied"] == report["listed"], report
    unchanged = []
    for _ in range(rounds):
        listings.append((await list_only(client, config.page_size))[0])
        start = time.perf_counter()
        report = await bridge.resync()
        unchanged.append(time.perf_counter() - start)
        assert report["unchanged"] == report["listed"], report
    await client.close()
    app.close()
    return first, statistics.median(unchanged), worst, statistics.median(listings)


async def run_naive(replay: Replay, settings: Settings) -> float:
    app = create_app()
    app.use_settings(settings)
    client = DrpClient(DrpConfig(url=replay.url, token=TOKEN))
    start = time.perf_counter()
    with app.producer_or_acquire() as producer:
        async for text in client.events():
            event = json.loads(text)
            nudge = Nudge(uuid=event["Key"], generation=0).model_dump()
            app.send_task(
                RECONCILE_TASK, kwargs={"nudge": nudge}, queue="tag-naive", producer=producer
            )
    elapsed = time.perf_counter() - start
    await client.close()
    app.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--window-ms", type=int, default=250)
    parser.add_argument("--resync-machines", type=int, default=10_000)
    parser.add_argument(
        "--naive-events", type=int, default=3000, help="events replayed to the naive loop"
    )
    args = parser.parse_args()
    os.environ.setdefault("CI", "")
    support.redis_client().flushdb()
    settings = Settings(
        broker_url=support.test_broker_url(),
        redis_url=support.test_redis_url(),
        key_prefix=f"bench-{secrets.token_hex(3)}:",
        send_events=False,
    )
    events, _ = build_events(args.machines, args.updates, "bench")
    sizes = sorted(len(e) for e in events)
    window_s = args.window_ms / 1000
    replay = Replay(args.machines, args.updates).start()
    try:
        elapsed, bridge, nudges = asyncio.run(run_bridge(replay, settings, window_s))
    finally:
        replay.stop()
    replay = Replay(args.machines, args.updates, limit=args.naive_events).start()
    try:
        naive_elapsed = asyncio.run(run_naive(replay, settings))
    finally:
        replay.stop()
    replay = Replay(1, 1, listing=args.resync_machines).start()
    try:
        resync_first, resync_second, stall, listing = asyncio.run(run_resync(replay, settings))
    finally:
        replay.stop()
    support.purge_queues(["tag-bench", "tag-bench2", "tag-naive"])

    bridge_rate = len(events) / elapsed
    naive_rate = min(args.naive_events, len(events)) / naive_elapsed
    windows = max(1.0, elapsed / window_s)
    worst = max(nudges.values()) if nudges else 0
    print(
        f"replay: {len(events)} events, {args.machines} machines, "
        f"median event {sizes[len(sizes) // 2]} bytes"
    )
    print(f"bridge: {elapsed:.2f}s, {bridge_rate:.0f} events/s; stats {dict(bridge.stats)}")
    print(
        f"nudges: {sum(nudges.values())} for {len(nudges)} machines; most for one machine {worst} "
        f"over {windows:.1f} windows of {args.window_ms} ms "
        f"-> {worst / windows:.2f} per machine per window"
    )
    print(
        f"naive: {naive_rate:.0f} events/s (one apply_async per event, {args.naive_events} events)"
    )
    print(
        f"resync of {args.resync_machines} machines: {resync_first:.2f}s writing them all "
        f"(longest event-loop stall {stall * 1000:.0f} ms), {resync_second:.2f}s when up to "
        f"date; listing them only: {listing:.2f}s"
    )
    print(
        f"events_per_s={bridge_rate:.0f} ratio={bridge_rate / naive_rate:.2f} "
        f"resync_ratio={resync_second / listing:.2f} "
        f"first_resync_ratio={resync_first / listing:.2f}"
    )


if __name__ == "__main__":
    main()

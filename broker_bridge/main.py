"""``ctxpool bridge`` / ``python -m broker_bridge``: run the bridge until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from pydantic import ValidationError

from broker_bridge.bridge import Bridge
from broker_bridge.config import BridgeConfig
from broker_bridge.metrics import BridgeCollector
from broker_bridge.sink import PoolSink
from pool.appconfig import CtxpoolCelery, create_app
from pool.drp.client import DrpClient
from pool.drp.config import DrpConfig
from pool.drp.errors import DrpError
from pool.health import serve_health
from pool.settings import Settings

log = logging.getLogger(__name__)

#: Where the bridge's /healthz and /metrics listen (scraped from other hosts).
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


def pool_sink(app: CtxpoolCelery) -> PoolSink:
    """The bridge's sink on ``app``'s state store, API and broker."""
    rt = app.runtime
    return PoolSink(rt.store, rt.api)


def bridge_config(settings: Settings) -> BridgeConfig:
    endpoints = tuple(settings.drp_endpoints) or ((settings.drp_url,) if settings.drp_url else ())
    return BridgeConfig(
        engine=settings.engine,
        endpoints=endpoints,
        coalesce_s=settings.coalesce_ms / 1000.0,
        resync_s=settings.resync_s,
        machine_token_ttl_s=settings.machine_token_ttl_s,
        broker_name=settings.broker_name,
        fresh_store_wait_s=settings.membership_ttl_s,
    )


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run one bridge for ``settings`` until ``stop`` is set (or a signal arrives).

    Raises:
        DrpError: the DRP URL or credentials are not configured.
    """
    config = DrpConfig.from_settings(settings)
    app = create_app()
    app.use_settings(settings)
    client = DrpClient(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            break
    bridge = Bridge(client, pool_sink(app), bridge_config(settings))
    server = None
    if settings.bridge_metrics_port:  # /healthz (503: a loop dead or no recent resync), /metrics
        server = serve_health(
            bridge.health,
            settings.bridge_metrics_port,
            ALL_INTERFACES,
            BridgeCollector(bridge),
        )
    log.info("bridge for DRP %s (engine %s) starting", config.url, settings.engine)
    try:
        await bridge.run(stop)
    finally:
        if server is not None:
            server.stop()
        await client.close()
        app.close()


def main() -> int:
    """Entry point of ``ctxpool bridge`` and ``python -m broker_bridge``; exit code 2 on bad
    configuration (the message says what is missing; secrets are never printed)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = Settings()
        asyncio.run(serve(settings))
    except ValidationError as exc:
        log.error("invalid settings: %s", exc)
        return 2
    except DrpError as exc:
        log.error("cannot start the bridge: %s", exc)
        return 2
    return 0

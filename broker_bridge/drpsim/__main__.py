"""``python -m broker_bridge.drpsim``: serve the DRP simulator (the compose ``demo`` profile).

python -m broker_bridge.drpsim --host 0.0.0.0 --port 8092 --seed-demo ctxpool-demo/busybox:1
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Sequence

from broker_bridge.drpsim.demo import seed_demo
from broker_bridge.drpsim.sim import DrpSim
from broker_bridge.drpsim.state import DEFAULT_TOKEN

log = logging.getLogger("broker_bridge.drpsim")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker_bridge.drpsim")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8092)
    parser.add_argument(
        "--token",
        default=os.environ.get("CTXPOOL_DRP_TOKEN", DEFAULT_TOKEN),
        help="the user token it accepts (default: $CTXPOOL_DRP_TOKEN)",
    )
    parser.add_argument("--seed-demo", metavar="IMAGE", help="create the demo content on IMAGE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sim = DrpSim(token=args.token, host=args.host, port=args.port).start()
    try:
        log.info("DRP simulator on %s", sim.url_for(args.host))
        if args.seed_demo:
            content = seed_demo(sim, args.seed_demo)
            log.info("seeded %d demo machines and one cluster", len(content.machines))
        stop.wait()
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

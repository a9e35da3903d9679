"""``ctxpool`` command line: thin tables over the library."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from pool.admin import AdminState, NodeAdmin, describe, format_duration, parse_duration_s
from pool.audits import cli as audit_cli
from pool.contexts.models import ContextStatus
from pool.contexts.store import StateStore
from pool.errors import CtxpoolError
from pool.limits.view import LimitView, limit_views
from pool.membership import NodeView
from pool.settings import Settings, validate_name
from pool.status import collect_status, render_status
from pool.textfmt import age, table


def format_nodes(views: list[NodeView], now: float) -> str:
    rows = []
    for v in views:
        r = v.record
        rows.append(
            [
                v.name,
                "alive" if v.alive else "stalled",
                describe(v.admin, now),
                ",".join(r.tags) if r else "-",
                f"{r.stats.running_contexts}/{r.stats.capacity}" if r else "-",
                ("gated" if r.stats.gated else "open") if r else "-",
                f"{r.stats.load_avg[0]:.2f}" if r else "-",
                r.worker_id if r else "-",
                f"{r.annotations.os}/{r.annotations.arch} docker {r.annotations.docker_version}"
                if r
                else "-",
                age(v.last_seen, now),
            ]
        )
    return table(
        ["NODE", "UP", "STATE", "TAGS", "CONTEXTS", "INTAKE", "LOAD1", "WORKER", "PLATFORM",
         "SEEN"],
        rows,
    )  # fmt: skip


def format_order_change(
    node: str, action: str, previous: NodeAdmin | None, now: float, known: bool
) -> str:
    """What ``drain``/``quarantine``/``undrain`` did, in one or two lines."""
    line = f"node {node}: {action}"
    if previous is not None:
        line += f" (was {previous.mode.value} since {format_duration(now - previous.since)} ago"
        line += f", by {previous.by})" if previous.by else ")"
    elif action == "active":
        line += " (it was not drained or quarantined)"
    if not known:
        line += f"\nnode {node} has not been seen in the last day: the order waits for it"
    return line


def _wait_drained(store: StateStore, node: str, timeout_s: float) -> int:
    """Poll the node's state until it reports ``drained``; print its progress as it changes.

    Returns 0 when drained, 3 when ``timeout_s`` passed (or the order was lifted).
    """
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        view = next((v for v in store.members.nodes() if v.name == node), None)
        state = view.admin if view is not None else None
        line = describe(state, time.time()) if state is not None else "not seen"
        if line != last:
            print(f"node {node}: {line}", flush=True)
            last = line
        if state is not None and state.state is AdminState.DRAINED:
            return 0
        if state is not None and state.state is not AdminState.DRAINING:
            return 3
        if time.monotonic() > deadline:
            print(f"node {node}: not drained after {timeout_s:.0f}s", file=sys.stderr)
            return 3
        time.sleep(0.5)


def _status(
    settings: Settings, store: StateStore, as_json: bool, watch: bool, every_s: float
) -> int:
    from pool.limits.limiter import RedisLimiter

    limiter = RedisLimiter.from_url(settings.redis_url, settings.key_prefix)
    depth = _queue_depth(settings)
    while True:
        report = collect_status(store, settings.limits, limiter, depth)
        text = report.model_dump_json(indent=2) if as_json else render_status(report)
        if watch and not as_json and sys.stdout.isatty():
            print("\033[H\033[2J", end="")
        print(text, flush=True)
        if not watch:
            return 0
        try:
            time.sleep(every_s)
        except KeyboardInterrupt:
            return 0


def _admin_command(args: argparse.Namespace, store: StateStore, now: float) -> int:
    validate_name(args.node, "node name")
    known = any(v.name == args.node for v in store.members.nodes())
    admins = store.admin
    if args.command == "drain":
        previous = admins.drain(args.node, args.why or "", now)
        print(format_order_change(args.node, "draining", previous, now, known), flush=True)
        return _wait_drained(store, args.node, args.timeout) if args.wait else 0
    if args.command == "quarantine":
        for_s = parse_duration_s(args.for_) if args.for_ else None
        previous = admins.quarantine(args.node, args.why, for_s, now)
        action = "quarantined" + (f" for {format_duration(for_s)}" if for_s else "")
        print(format_order_change(args.node, action, previous, now, known))
        return 0
    previous = admins.lift(args.node)
    print(format_order_change(args.node, "active", previous, now, known))
    return 0


def format_contexts(statuses: list[ContextStatus], now: float) -> str:
    rows = []
    for s in statuses:
        owner = s.owner or "-"
        if s.owner and not s.owner_alive:
            owner += " (stalled)"
        rows.append(
            [
                s.uuid,
                s.desired.value if s.desired else "-",
                s.tag or "-",
                owner,
                s.state.value,
                str(s.generation if s.generation is not None else "-"),
                str(s.applied_generation if s.applied_generation is not None else "-"),
                age(s.updated_at, now),
                (s.last_error or "")[:80],
            ]
        )
    return table(
        ["UUID", "DESIRED", "TAG", "OWNER", "STATE", "GEN", "APPLIED", "UPDATED", "LAST ERROR"],
        rows,
    )


def format_limits(views: list[LimitView]) -> str:
    rows = []
    for v in views:
        busiest = min(v.buckets, key=lambda b: (b.tokens, -b.in_flight))
        in_flight = sum(b.in_flight for b in v.buckets)
        c = v.counters
        rows.append(
            [
                v.name,
                v.definition,
                str(len(v.buckets)),
                f"{busiest.tokens:.1f}" + (f" ({busiest.key})" if busiest.key != "*" else ""),
                str(in_flight) + (f"/{v.concurrency}" if v.concurrency else ""),
                "?" if v.queued is None else str(v.queued),
                str(v.held),
                str(c["granted"]),
                str(c["throttled"]),
                str(c["deferred"]),
                str(c["stale"]),
                str(c["failed"]),
            ]
        )
    return table(
        [
            "LIMIT",
            "DEFINITION",
            "KEYS",
            "TOKENS(min)",
            "IN-FLIGHT",
            "QUEUED",
            "AT-GATES",
            "GRANTED",
            "THROTTLED",
            "DEFERRED",
            "STALE",
            "FAILED",
        ],
        rows,
    )


def _queue_depth(settings: Settings) -> Callable[[str], int | None]:
    from pool.appconfig import create_app

    app = create_app()
    app.use_settings(settings)
    return app.runtime.queue_depth


def _serve_metrics(settings: Settings, store: StateStore, port: int, addr: str) -> int:
    from prometheus_client import CollectorRegistry, generate_latest, start_http_server

    from pool.limits.limiter import RedisLimiter
    from pool.metrics import PoolCollector

    registry = CollectorRegistry()
    limiter = RedisLimiter.from_url(settings.redis_url, settings.key_prefix)
    registry.register(PoolCollector(settings.limits, limiter, store, _queue_depth(settings)))
    if port == 0:
        store.ping()  # printing once: a dead Redis is an error, not a 0 gauge
        sys.stdout.write(generate_latest(registry).decode())
        return 0
    start_http_server(port, addr=addr, registry=registry)
    print(f"ctxpool metrics on http://{addr}:{port}/metrics", file=sys.stderr)
    while True:
        time.sleep(3600)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ctxpool", description="ctxpool pool inspection and node administration"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    st = sub.add_parser("status", help="one screen: nodes, contexts, errors, queues, limits")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.add_argument("--watch", action="store_true", help="refresh every --interval seconds")
    st.add_argument("--interval", type=float, default=2.0, help="--watch: seconds")
    up = sub.add_parser(
        "up", help="run the local stack: Redis, node, bridge (or the DRP simulator), Flower"
    )
    up.add_argument("--clean", action="store_true", help="remove the demo containers at exit")
    sub.add_parser("down", help="stop a running `ctxpool up` and remove its demo containers")
    for name, text in (
        ("nodes", "membership of worker nodes"),
        ("contexts", "contexts and state"),
        ("limits", "global limits: tokens, in flight, waiting, counters"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d = sub.add_parser(
        "drain", help="stop a node's intake and move its contexts to other nodes of their tags"
    )
    d.add_argument("node")
    d.add_argument("--why", default="", help="reason, shown in `ctxpool nodes`")
    d.add_argument("--wait", action="store_true", help="wait until the node reports drained")
    d.add_argument("--timeout", type=float, default=3600.0, help="--wait: give up after (s)")
    q = sub.add_parser("quarantine", help="a node keeps what it runs but takes nothing new")
    q.add_argument("node")
    q.add_argument("--why", required=True, help="reason, shown in `ctxpool nodes`")
    q.add_argument("--for", dest="for_", metavar="DURATION", help="lift after 90s/30m/2h/1d")
    for name, text in (
        ("undrain", "lift a drain (or a quarantine): the node takes work again"),
        ("unquarantine", "lift a quarantine (or a drain): the node takes work again"),
    ):
        sub.add_parser(name, help=text).add_argument("node")
    sub.add_parser("bridge", help="run the DRP bridge (CTXPOOL_DRP_URL, credentials)")
    m = sub.add_parser("metrics", help="serve Prometheus metrics (pool-wide)")
    m.add_argument("--port", type=int, default=9808, help="port; 0 prints them once and exits")
    m.add_argument("--addr", default="0.0.0.0", help="address to listen on")  # noqa: S104
    audit_cli.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "bridge":  # a process of its own: pool never imports broker_bridge
        os.execvp(sys.executable, [sys.executable, "-m", "broker_bridge"])  # noqa: S606
    if args.command in ("up", "down"):  # the stack runs Docker: not in this process
        extra = ["--clean"] if args.command == "up" and args.clean else []
        os.execvp(sys.executable, [sys.executable, "-m", "pool.up", args.command, *extra])  # noqa: S606
    try:
        settings = Settings()
        store = StateStore.from_url(settings.redis_url, settings.key_prefix)
        now = time.time()
        if args.command == "audit":
            from pool.appconfig import create_app

            app = create_app()
            app.use_settings(settings)
            return audit_cli.main(args, app)
        if args.command == "metrics":
            return _serve_metrics(settings, store, args.port, args.addr)
        if args.command in ("drain", "quarantine", "undrain", "unquarantine"):
            return _admin_command(args, store, now)
        if args.command == "status":
            return _status(settings, store, args.json, args.watch, args.interval)
        if args.command == "limits":
            from pool.limits.limiter import RedisLimiter

            limiter = RedisLimiter.from_url(settings.redis_url, settings.key_prefix)
            lviews = limit_views(settings.limits, limiter, _queue_depth(settings))
            out = (
                json.dumps([v.model_dump(mode="json") for v in lviews], indent=2)
                if args.json
                else format_limits(lviews)
            )
        elif args.command == "nodes":
            views = store.members.nodes()
            out = (
                json.dumps([v.model_dump(mode="json") for v in views], indent=2)
                if args.json
                else format_nodes(views, now)
            )
        else:
            statuses = store.statuses(list(store.iter_context_ids()))
            out = (
                json.dumps([s.model_dump(mode="json") for s in statuses], indent=2)
                if args.json
                else format_contexts(statuses, now)
            )
    except ValidationError as exc:
        print(f"ctxpool: invalid settings: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a bad --for
        print(f"ctxpool: {exc}", file=sys.stderr)
        return 2
    except CtxpoolError as exc:
        print(f"ctxpool: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

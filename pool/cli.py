"""``ctxpool`` command line: thin tables over the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from pydantic import ValidationError

from pool.errors import CtxpoolError
from pool.models import ContextStatus, NodeView
from pool.settings import Settings
from pool.store import StateStore


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _age(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    secs = max(0.0, now - ts)
    return f"{secs:.0f}s" if secs < 120 else f"{secs / 60:.0f}m"


def format_nodes(views: list[NodeView], now: float) -> str:
    rows = []
    for v in views:
        r = v.record
        rows.append(
            [
                v.name,
                "alive" if v.alive else "stalled",
                ",".join(r.tags) if r else "-",
                f"{r.stats.running_contexts}/{r.stats.capacity}" if r else "-",
                ("gated" if r.stats.gated else "open") if r else "-",
                f"{r.stats.load_avg[0]:.2f}" if r else "-",
                r.worker_id if r else "-",
                f"{r.annotations.os}/{r.annotations.arch} docker {r.annotations.docker_version}"
                if r
                else "-",
                _age(v.last_seen, now),
            ]
        )
    return _table(
        ["NODE", "STATE", "TAGS", "CONTEXTS", "INTAKE", "LOAD1", "WORKER", "PLATFORM", "SEEN"], rows
    )


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
                _age(s.updated_at, now),
                (s.last_error or "")[:80],
            ]
        )
    return _table(
        ["UUID", "DESIRED", "TAG", "OWNER", "STATE", "GEN", "APPLIED", "UPDATED", "LAST ERROR"],
        rows,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ctxpool", description="ctxpool pool inspection")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("nodes", "membership of worker nodes"), ("contexts", "contexts and state")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
        store = StateStore.from_url(settings.redis_url, settings.key_prefix)
        now = time.time()
        if args.command == "nodes":
            views = store.nodes()
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
    except CtxpoolError as exc:
        print(f"ctxpool: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

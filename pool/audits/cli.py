"""``ctxpool audit ...``: run, status, report, rerun, list, checks. Thin over
:class:`pool.audits.service.Audits`; imports neither docker-py nor a check's client library
until a check is loaded."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from pool.audits.checks import load_checks
from pool.audits.models import BatchInfo, BatchReport
from pool.textfmt import age, table

#: Width of the progress bar in characters.
BAR_WIDTH = 30


def add_parser(sub: Any) -> None:
    """Add ``audit`` and its subcommands to ``ctxpool``'s subparsers."""
    audit = sub.add_parser("audit", help="batch audits: run a check over many targets")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    run = asub.add_parser("run", help="run CHECK over targets; prints the batch id at once")
    run.add_argument("check")
    run.add_argument("targets", nargs="*", help="targets (machine UUIDs, hosts, host:port...)")
    run.add_argument("--file", type=Path, help="more targets, one a line ('-': stdin)")
    run.add_argument("--machines", metavar="FILTER", help="DRP machines matching FILTER")
    run.add_argument("--param", action="append", default=[], metavar="K=V",
                     help="a check parameter (V parsed as JSON when it is JSON)")  # fmt: skip
    run.add_argument("--tag", default="default", help="nodes with this tag run it")
    run.add_argument("--writeback", action="store_true", help="results to DRP audit/<check>")
    run.add_argument("--wait", action="store_true", help="show progress until it completes")
    run.add_argument("--interval", type=float, default=0.5, help="--wait: seconds per update")
    st = asub.add_parser("status", help="a batch's progress")
    st.add_argument("batch")
    st.add_argument("--watch", action="store_true", help="show progress until it completes")
    st.add_argument("--interval", type=float, default=0.5)
    st.add_argument("--json", action="store_true")
    rep = asub.add_parser("report", help="a batch's results")
    rep.add_argument("batch")
    fmt = rep.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true")
    rep.add_argument("--failed", action="store_true", help="only targets that did not pass")
    rr = asub.add_parser("rerun", help="run a batch's check again over its failed targets")
    rr.add_argument("batch")
    rr.add_argument("--failed", action="store_true", default=True, help="(default)")
    rr.add_argument("--all", action="store_true", help="every target, not only failed ones")
    ls = asub.add_parser("list", help="recent batches")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true")
    asub.add_parser("checks", help="checks this installation knows")


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; a value that parses as JSON is taken as such (numbers, booleans...).

    Raises:
        ValueError: a pair without ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r} is not k=v")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def read_targets(args: argparse.Namespace) -> list[str]:
    targets = list(args.targets)
    if args.file is not None:
        text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text()
        targets += [ln.strip() for ln in text.splitlines() if ln.strip() and ln[0] != "#"]
    return targets


def progress_line(info: BatchInfo) -> str:
    """``[#####.....] 123/500  pass 100 fail 20 error 3 timeout 0 running 4  12s``."""
    total = max(info.total, 1)
    filled = int(BAR_WIDTH * info.done / total)
    counts = " ".join(
        f"{s} {info.counts.get(s, 0)}" for s in ("pass", "fail", "error", "timeout", "running")
    )
    return (
        f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {info.done}/{info.total}  {counts}  "
        f"{info.age_s():.0f}s"
    )


def watch(audits: Any, batch: str, every_s: float) -> BatchInfo:
    """Print the progress line until the batch completes (``\\r`` on a terminal, a line per
    change otherwise)."""
    tty = sys.stdout.isatty()
    last = ""

    def show(info: BatchInfo) -> None:
        nonlocal last
        line = progress_line(info)
        if line.split("  ")[0] == last.split("  ")[0] and not tty:
            return
        last = line
        print(("\r" + line) if tty else line, end="" if tty else "\n", flush=True)

    info: BatchInfo = audits.wait(batch, every_s=every_s, progress=show)
    if tty:
        print()
    return info


def render_report(report: BatchReport, as_json: bool, as_csv: bool) -> str:
    if as_json:
        return report.model_dump_json(indent=2)
    if as_csv:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["target", "result", "summary", "node", "duration_s", "detail"])
        for r in report.rows:
            writer.writerow([r.target, r.state, r.summary, r.node,
                             "" if r.duration_s is None else f"{r.duration_s:.3f}",
                             json.dumps(r.detail, sort_keys=True)])  # fmt: skip
        return buf.getvalue().rstrip("\n")
    rows = [
        [r.target, r.state, r.node or "-",
         "-" if r.duration_s is None else f"{r.duration_s:.3f}", r.summary[:80]]
        for r in report.rows
    ]  # fmt: skip
    head = f"{render_info(report.batch)}\n\n"
    return head + table(["TARGET", "RESULT", "NODE", "SECONDS", "SUMMARY"], rows)


def render_info(info: BatchInfo, now: float | None = None) -> str:
    at = time.time() if now is None else now
    state = "complete" if info.complete else "running"
    return (
        f"batch {info.batch}: {info.check} v{info.version} on tag {info.tag}, {state}, "
        f"created {age(info.created_at, at)} ago{' (' + info.label + ')' if info.label else ''}"
        f"\n{progress_line(info)}"
    )


def render_list(infos: list[BatchInfo], now: float) -> str:
    rows = [
        [i.batch, i.check, i.tag, "complete" if i.complete else "running",
         f"{i.done}/{i.total}", str(i.counts.get("pass", 0)), str(i.failed),
         age(i.created_at, now), i.label[:40]]
        for i in infos
    ]  # fmt: skip
    if not rows:
        return "(no audit batches)"
    return table(["BATCH", "CHECK", "TAG", "STATE", "DONE", "PASS", "FAILED", "AGE", "LABEL"], rows)


def main(args: argparse.Namespace, app: Any) -> int:
    """Run ``ctxpool audit ...``; returns the exit status (``run --wait``/``status --watch``:
    1 when some target did not pass).

    Raises:
        CtxpoolError, ValueError: reported by :func:`pool.cli.main`.
    """
    from pool.audits.service import Audits, machine_targets

    cmd = args.audit_command
    if cmd == "checks":
        rows = [[c.name, c.version, c.limit or "-", c.description] for c in load_checks().values()]
        print(table(["CHECK", "VERSION", "LIMIT", "DESCRIPTION"], rows))
        return 0
    audits = Audits(app)
    if cmd == "run":
        targets = read_targets(args)
        if args.machines:
            targets += machine_targets(audits.runtime, args.machines)
        if not targets:
            raise ValueError("no targets (give them, --file or --machines)")
        batch = audits.submit(
            args.check, targets, parse_params(args.param), args.tag, args.writeback
        )
        print(batch, flush=True)
        if not args.wait:
            return 0
        info = watch(audits, batch, args.interval)
        return 1 if info.failed else 0
    if cmd == "list":
        infos = audits.recent(args.limit)
        print(json.dumps([i.model_dump(mode="json") for i in infos], indent=2) if args.json
              else render_list(infos, time.time()))  # fmt: skip
        return 0
    if cmd == "rerun":
        print(audits.rerun(args.batch, failed_only=not args.all))
        return 0
    if cmd == "status":
        found = audits.info(args.batch)
        if found is None:
            raise ValueError(f"no audit batch {args.batch} (unknown, or expired)")
        if args.watch:
            return 1 if watch(audits, args.batch, args.interval).failed else 0
        print(found.model_dump_json(indent=2) if args.json else render_info(found))
        return 0
    report = audits.report(args.batch, failed_only=args.failed)
    if report is None:
        raise ValueError(f"no audit batch {args.batch} (unknown, or expired)")
    print(render_report(report, args.json, args.csv))
    return 0

"""Plain text formatting shared by the CLI screens: tables and ages."""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table, columns padded to their widest cell."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def age(ts: float | None, now: float) -> str:
    """``12s``/``5m`` since ``ts`` (``-`` for none)."""
    if not ts:
        return "-"
    secs = max(0.0, now - ts)
    return f"{secs:.0f}s" if secs < 120 else f"{secs / 60:.0f}m"

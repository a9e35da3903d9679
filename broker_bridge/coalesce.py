"""Coalescing: many DRP events for one object within a window become one update, the latest.

DRP emits several ``save``/``update`` events per change of a machine. The bridge offers every
relevant event here and takes what is due: one item per key per window, carrying the latest
state, so a burst of updates to one machine yields one nudge.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Pending(Generic[T]):
    item: T
    due: float
    seq: int  # which heap entry is this window's (entries of drained windows are stale)


class Coalescer(Generic[T]):
    """Latest item per key, released ``window_s`` after the key's first offer. Not thread-safe."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s < 0:
            raise ValueError("window_s must be >= 0")
        self.window_s = window_s
        self.clock = clock
        self._pending: dict[str, _Pending[T]] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self.offered = 0
        self.released = 0

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, key: str, item: T) -> None:
        """Keep ``item`` as ``key``'s latest; starts the key's window when none is open."""
        self.offered += 1
        pending = self._pending.get(key)
        if pending is not None:
            pending.item = item
            return
        due = self.clock() + self.window_s
        self._seq += 1
        self._pending[key] = _Pending(item, due, self._seq)
        heapq.heappush(self._heap, (due, self._seq, key))

    def offer_if_idle(self, key: str, item: T) -> None:
        """Offer ``item`` unless ``key`` already has a newer one pending."""
        if key not in self._pending:
            self.offer(key, item)

    def due(self, now: float | None = None) -> list[tuple[str, T]]:
        """Every key whose window has closed, with its latest item (oldest window first)."""
        now = self.clock() if now is None else now
        out: list[tuple[str, T]] = []
        while self._heap and self._heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._heap)
            pending = self._pending.get(key)
            if pending is not None and pending.seq == seq:
                del self._pending[key]
                out.append((key, pending.item))
        self.released += len(out)
        return out

    def drain_key(self, key: str) -> T | None:
        """Forget ``key``'s pending item (a fresher source superseded it); returns it.

        The key's heap entry stays behind as a stale entry: a key offered again opens a new
        window and is released at its own due time, never at the drained one's.
        """
        pending = self._pending.pop(key, None)
        return None if pending is None else pending.item

    def drain(self) -> list[tuple[str, T]]:
        """Everything pending, now (shutdown, or a resync that supersedes it)."""
        out = [(key, p.item) for key, p in self._pending.items()]
        self._pending.clear()
        self._heap.clear()
        self.released += len(out)
        return out

    def next_due_in(self, now: float | None = None) -> float | None:
        """Seconds until the next window closes (``None`` when nothing is pending)."""
        while self._heap and self._is_stale(self._heap[0]):
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        now = self.clock() if now is None else now
        return max(0.0, self._heap[0][0] - now)

    def _is_stale(self, entry: tuple[float, int, str]) -> bool:
        pending = self._pending.get(entry[2])
        return pending is None or pending.seq != entry[1]

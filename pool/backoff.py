"""Capped exponential backoff with jitter, for reconnect loops."""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``base_s * 2**n`` capped at ``cap_s``, drawn uniformly from their upper half
    (jitter keeps many clients from retrying in step)."""

    def __init__(
        self, base_s: float = 1.0, cap_s: float = 60.0, rng: random.Random | None = None
    ) -> None:
        self.base_s, self.cap_s, self.attempt = base_s, cap_s, 0
        self.rng = rng or random.Random()

    def next_s(self) -> float:
        self.attempt += 1
        ceiling = min(self.cap_s, self.base_s * 2 ** (self.attempt - 1))
        return self.rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0

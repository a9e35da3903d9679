"""What travels and what is stored for audits: the item payload of a task message, a batch's
meta record, report rows."""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pool.audits.checks import Outcome

#: Batch ids: safe in a Redis key, a CLI argument and a DRP param value.
BATCH_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")

ItemState = Literal["pending", "running", "pass", "fail", "error", "timeout"]
STATES: tuple[ItemState, ...] = ("pending", "running", "pass", "fail", "error", "timeout")
FINAL_STATES: frozenset[str] = frozenset({"pass", "fail", "error", "timeout"})


def check_batch_id(value: str) -> str:
    """Raises: ValueError: not a usable batch id."""
    if not BATCH_ID_RE.match(value):
        raise ValueError(f"batch id {value!r} must be 1-128 characters of [A-Za-z0-9_.:-]")
    return value


class ItemPayload(BaseModel):
    """One audit item, as its task message carries it (JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: str
    index: int = Field(ge=0)
    target: str = Field(min_length=1, max_length=1024)
    check: str
    params: dict[str, Any] = Field(default_factory=dict)
    tag: str
    timeout_s: float = Field(gt=0)
    limit: str | None = None
    key_fields: dict[str, str] = Field(default_factory=dict)
    writeback: bool = False

    _batch = field_validator("batch")(check_batch_id)


class BatchSpec(BaseModel):
    """What a producer asks for: one check over many targets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    check: str
    targets: list[str]
    params: dict[str, Any] = Field(default_factory=dict)
    tag: str = "default"
    writeback: bool = Field(False, description="Each machine's result to DRP param audit/<check>.")
    label: str = Field("", max_length=200, description="Free text (e.g. the schedule's name).")


class BatchInfo(BaseModel):
    """A batch's record: what it runs and how far it got."""

    batch: str
    check: str
    version: str = "1"
    params: dict[str, Any] = Field(default_factory=dict)
    tag: str = "default"
    label: str = ""
    writeback: bool = False
    timeout_s: float = 30.0
    limit: str | None = None
    total: int = 0
    counts: dict[str, int] = Field(default_factory=dict)
    done: int = 0
    attempts: int = 0
    resent: int = 0
    created_at: float = 0.0
    started_at: float | None = None
    progress_at: float = 0.0
    enqueued_at: float = 0.0
    finished_at: float | None = None

    @property
    def complete(self) -> bool:
        return self.finished_at is not None

    @property
    def failed(self) -> int:
        """Items that did not pass (fail, error, timeout)."""
        return sum(self.counts.get(s, 0) for s in ("fail", "error", "timeout"))

    def age_s(self, now: float | None = None) -> float:
        end = self.finished_at or (time.time() if now is None else now)
        return max(0.0, end - self.created_at)


class ItemRow(BaseModel):
    """One row of a report."""

    index: int
    target: str
    state: ItemState
    summary: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)
    node: str = ""
    duration_s: float | None = None
    at: float | None = None


class StoredResult(BaseModel):
    """What ``audit:<batch>:results`` holds per final item."""

    result: Outcome
    summary: str = ""
    detail: dict[str, Any] = Field(default_factory=dict)
    node: str = ""
    duration_s: float = 0.0
    at: float = Field(default_factory=time.time)


class BatchReport(BaseModel):
    """A batch and its rows (``ctxpool audit report --json``)."""

    batch: BatchInfo
    rows: list[ItemRow]

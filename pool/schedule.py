"""Audit schedules as settings carry them (``CTXPOOL_AUDIT_SCHEDULES``), and cron arithmetic.

A schedule names a check, its targets (a list, or a DRP machine filter), parameters, a tag and
when it runs (``cron``: five crontab fields in UTC, or ``daily``: ``HH:MM`` UTC). Celery beat
fires it; the batch id is derived from the schedule's name and the scheduled time
(:func:`scheduled_batch_id`), so two beat processes firing the same time create one batch.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

UTC = dt.UTC


def _field(spec: str, low: int, high: int) -> frozenset[int]:
    """Values of one crontab field (``*``, ``*/n``, ``a-b``, ``a-b/n``, lists of those)."""
    out: set[int] = set()
    for part in spec.split(","):
        step = 1
        if "/" in part:
            part, step_s = part.split("/", 1)
            step = int(step_s)
            if step < 1:
                raise ValueError(f"bad step in {spec!r}")
        if part == "*":
            lo, hi = low, high
        elif "-" in part:
            lo_s, hi_s = part.split("-", 1)
            lo, hi = int(lo_s), int(hi_s)
        else:
            lo = hi = int(part)
        if lo < low or hi > high or lo > hi:
            raise ValueError(f"{spec!r} is out of {low}-{high}")
        out.update(range(lo, hi + 1, step))
    return frozenset(out)


class Cron(BaseModel):
    """Five crontab fields (minute hour day-of-month month day-of-week; 0 = Sunday), UTC."""

    model_config = ConfigDict(frozen=True)

    minute: frozenset[int]
    hour: frozenset[int]
    day: frozenset[int]
    month: frozenset[int]
    weekday: frozenset[int]
    text: str

    @classmethod
    def parse(cls, text: str) -> Cron:
        """Raises: ValueError: not five valid fields."""
        fields = text.split()
        if len(fields) != 5:
            raise ValueError(f"cron {text!r} must have 5 fields")
        weekday = _field(fields[4], 0, 7)
        return cls(
            minute=_field(fields[0], 0, 59),
            hour=_field(fields[1], 0, 23),
            day=_field(fields[2], 1, 31),
            month=_field(fields[3], 1, 12),
            weekday=frozenset(d % 7 for d in weekday),
            text=text,
        )

    def _day_ok(self, day: dt.date) -> bool:
        return (
            day.month in self.month
            and day.day in self.day
            and (day.isoweekday() % 7) in self.weekday
        )

    def last_due(self, now: dt.datetime) -> dt.datetime | None:
        """The latest time at or before ``now`` (UTC, whole minutes) the cron fires at
        (``None`` when it did not within the last 400 days)."""
        now = now.astimezone(UTC).replace(second=0, microsecond=0)
        for back in range(400):
            day = (now - dt.timedelta(days=back)).date()
            if not self._day_ok(day):
                continue
            for hour in sorted(self.hour, reverse=True):
                for minute in sorted(self.minute, reverse=True):
                    at = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                    if at <= now:
                        return at
        return None


class AuditSchedule(BaseModel):
    """One scheduled audit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    check: str
    targets: list[str] = Field(default_factory=list)
    machine_filter: str | None = Field(
        None, description="DRP machine filter, e.g. 'Workflow=discover' (targets: UUIDs)."
    )
    params: dict[str, Any] = Field(default_factory=dict)
    tag: str = "default"
    writeback: bool = False
    cron: str | None = None
    daily: str | None = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")

    @model_validator(mode="after")
    def _one_time(self) -> AuditSchedule:
        if (self.cron is None) == (self.daily is None):
            raise ValueError(f"schedule {self.name}: give exactly one of cron and daily")
        if not self.targets and not self.machine_filter:
            raise ValueError(f"schedule {self.name}: give targets or machine_filter")
        Cron.parse(self.crontab)
        return self

    @property
    def crontab(self) -> str:
        """The schedule as five crontab fields."""
        if self.cron is not None:
            return self.cron
        assert self.daily is not None
        hour, minute = self.daily.split(":")
        return f"{int(minute)} {int(hour)} * * *"


def scheduled_batch_id(name: str, due: dt.datetime) -> str:
    """The batch id of schedule ``name``'s run at ``due`` (same inputs, same id)."""
    return f"sched.{name}.{due.astimezone(UTC):%Y%m%dT%H%MZ}"

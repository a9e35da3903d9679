"""Cron arithmetic and schedule validation: the batch id of a scheduled run depends only on the
schedule's name and its due time (two beat processes compute the same one)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from pool.audits.cli import parse_params, progress_line
from pool.audits.models import BatchInfo
from pool.schedule import UTC, AuditSchedule, Cron, scheduled_batch_id


def at(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_last_due_of_a_weekday_schedule() -> None:
    cron = Cron.parse("*/15 3 * * 1-5")
    assert cron.last_due(at(2024, 6, 2, 12, 0)) == at(2024, 5, 31, 3, 45)  # Sunday -> Friday
    assert cron.last_due(at(2024, 6, 3, 3, 14, 59)) == at(2024, 6, 3, 3, 0)


def test_daily_schedule_and_ids_agree_within_the_period() -> None:
    sched = AuditSchedule(name="hw", check="noop", targets=["a"], daily="02:30")
    cron = Cron.parse(sched.crontab)
    first = cron.last_due(at(2024, 6, 3, 2, 30, 1))
    second = cron.last_due(at(2024, 6, 3, 2, 31, 59))
    assert first == second == at(2024, 6, 3, 2, 30)
    assert scheduled_batch_id("hw", first) == "sched.hw.20240603T0230Z"
    assert cron.last_due(at(2024, 6, 3, 2, 29)) == at(2024, 6, 2, 2, 30)


@pytest.mark.parametrize("bad", ["* * * *", "61 * * * *", "* 24 * * *", "*/0 * * * *"])
def test_bad_cron_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"cron|out of|step"):
        Cron.parse(bad)


def test_schedule_needs_one_time_and_targets() -> None:
    with pytest.raises(ValidationError):
        AuditSchedule(name="x", check="noop", targets=["a"])
    with pytest.raises(ValidationError):
        AuditSchedule(name="x", check="noop", daily="01:00")


def test_cli_params_and_progress() -> None:
    assert parse_params(["a=1", "b=x", "c=true", "d={\"k\": 2}"]) == {
        "a": 1, "b": "x", "c": True, "d": {"k": 2}}  # fmt: skip
    with pytest.raises(ValueError, match="k=v"):
        parse_params(["nope"])
    info = BatchInfo(batch="b", check="noop", total=4, done=2, created_at=1.0,
                     counts={"pass": 1, "fail": 1})  # fmt: skip
    assert progress_line(info).startswith("[" + "#" * 15 + "." * 15 + "] 2/4  pass 1 fail 1")

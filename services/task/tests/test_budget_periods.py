"""The period a charge falls in (local midnight in the budget's zone; weeks from Monday, months
from the 1st; DST days of 23 and 25 hours) and what an approved overrun grants."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from edrs_task.budgets import NO_PERIOD_START, Amount, current_period, grant


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "zone", "now", "start", "starts_at", "ends_at"),
    [
        # 23:30 UTC on 31 Jan is already 1 Feb in Paris (UTC+1): February's budget.
        ("month", "Europe/Paris", _utc(2031, 1, 31, 23, 30), date(2031, 2, 1),
         _utc(2031, 1, 31, 23), _utc(2031, 2, 28, 23)),
        ("month", "UTC", _utc(2031, 12, 31, 23, 59), date(2031, 12, 1),
         _utc(2031, 12, 1), _utc(2032, 1, 1)),
        # Sunday 2 March 2031 in Tokyo is the week of Monday 24 February.
        ("week", "Asia/Tokyo", _utc(2031, 3, 2, 10), date(2031, 2, 24),
         _utc(2031, 2, 23, 15), _utc(2031, 3, 2, 15)),
        # The day clocks fall back in New York lasts 25 hours.
        ("day", "America/New_York", _utc(2031, 11, 2, 12), date(2031, 11, 2),
         _utc(2031, 11, 2, 4), _utc(2031, 11, 3, 5)),
        ("day", "UTC", _utc(2031, 6, 1, 0, 0), date(2031, 6, 1), _utc(2031, 6, 1), _utc(2031, 6, 2)),
    ],
)  # fmt: skip
def test_the_period_of_an_instant(kind, zone, now, start, starts_at, ends_at) -> None:
    period = current_period(kind, zone, now)
    assert (period.kind, period.start, period.starts_at, period.ends_at) == (
        kind,
        start,
        starts_at,
        ends_at,
    )
    assert period.starts_at is not None and period.starts_at <= now < ends_at
    # The instant before the period's start is in the period before.
    before = current_period(kind, zone, starts_at - timedelta(microseconds=1))
    assert before.ends_at == starts_at and before.start < start


def test_a_budget_without_a_period_is_one_period_forever() -> None:
    period = current_period("none", "UTC", _utc(2031, 1, 1))
    assert (period.start, period.starts_at, period.ends_at) == (NO_PERIOD_START, None, None)
    assert current_period("none", "Asia/Tokyo", _utc(2099, 1, 1)) == period


def test_an_approved_overrun_grants_one_more_cap_or_what_the_call_needs() -> None:
    caps = Amount(tokens=100, cost_micros=1_000)
    used = Amount(tokens=90, cost_micros=100)
    assert grant(caps, Amount(), used, Amount(), Amount(tokens=20)) == Amount(
        tokens=100, cost_micros=1_000
    )
    # 350 tokens do not fit in one more cap: the grant is what the call lacks (340).
    assert grant(caps, Amount(), used, Amount(), Amount(tokens=350)) == Amount(
        tokens=340, cost_micros=1_000
    )
    # An uncapped resource stays uncapped: nothing granted.
    assert grant(caps, Amount(), used, Amount(), Amount(tool_calls=5)).tool_calls == 0

"""Budgets: pricing of a call, the check of a reservation against a budget's caps, and the period
a charge falls in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edrs_task.config import ModelPrice

RESOURCES = ("tokens", "tool_calls", "cost_micros")


@dataclass(frozen=True)
class PriceTable:
    prices: Mapping[str, ModelPrice]
    default: ModelPrice
    tool_call_micros: int = 0

    def price(self, model: str) -> ModelPrice:
        return self.prices.get(model, self.default)

    def estimate(self, model: str, tokens: int, tool_calls: int) -> int:
        """The most a call of up to `tokens` tokens may cost: every token at the dearer rate."""
        p = self.price(model) if model else ModelPrice()
        rate = max(p.prompt_micros_per_1k, p.completion_micros_per_1k)
        return _per_1k(tokens, rate) + tool_calls * self.tool_call_micros

    def cost(self, model: str, prompt: int, completion: int, tool_calls: int) -> int:
        p = self.price(model) if model else ModelPrice()
        return (
            _per_1k(prompt, p.prompt_micros_per_1k)
            + _per_1k(completion, p.completion_micros_per_1k)
            + tool_calls * self.tool_call_micros
        )


def _per_1k(tokens: int, micros_per_1k: int) -> int:
    # Rounded up: a budget errs on the side of the cap.
    return -(-tokens * micros_per_1k // 1000)


@dataclass(frozen=True)
class Amount:
    tokens: int = 0
    tool_calls: int = 0
    cost_micros: int = 0

    def get(self, resource: str) -> int:
        return int(getattr(self, resource))

    def __add__(self, other: Amount) -> Amount:
        return Amount(
            self.tokens + other.tokens,
            self.tool_calls + other.tool_calls,
            self.cost_micros + other.cost_micros,
        )


def allowance(caps: Amount, granted: Amount) -> Amount:
    """A period's caps with what approvals granted on top (an uncapped resource stays uncapped)."""
    return Amount(**{r: caps.get(r) + granted.get(r) if caps.get(r) else 0 for r in RESOURCES})


def grant(caps: Amount, granted: Amount, used: Amount, reserved: Amount, wanted: Amount) -> Amount:
    """What an approved overrun adds to its period: one more cap of every capped resource, or
    more where the call that asked needs more than that to fit."""
    limit = allowance(caps, granted)
    extra: dict[str, int] = {}
    for r in RESOURCES:
        if not caps.get(r):
            extra[r] = 0
            continue
        short = wanted.get(r) - (limit.get(r) - used.get(r) - reserved.get(r))
        extra[r] = max(caps.get(r), short)
    return Amount(**extra)


@dataclass(frozen=True)
class Overrun:
    """The first resource of a budget that a reservation would take past its cap."""

    resource: str
    requested: int
    available: int


def overrun(caps: Amount, used: Amount, reserved: Amount, wanted: Amount) -> Overrun | None:
    """None when `wanted` fits in every capped resource (a cap of 0 is no cap)."""
    for resource in RESOURCES:
        cap = caps.get(resource)
        if cap == 0:
            continue
        available = cap - used.get(resource) - reserved.get(resource)
        if wanted.get(resource) > available:
            return Overrun(resource, wanted.get(resource), available)
    return None


PERIODS = ("none", "day", "week", "month")
# The period key of a budget that never resets: one row holds its whole history.
NO_PERIOD_START = date(1970, 1, 1)


@dataclass(frozen=True)
class Period:
    """The budget period an instant falls in: its key (`kind`, `start`: the local calendar day it
    starts on) and its bounds (`ends_at` None for a budget that never resets)."""

    kind: str
    start: date
    starts_at: datetime | None
    ends_at: datetime | None


def current_period(kind: str, time_zone: str, now: datetime) -> Period:
    """The period of `now` for a budget that resets every `kind` (day; week from Monday; month
    from the 1st) at midnight in `time_zone`. Computed from the clock at each charge, so a reset
    needs no job that could be missed while the service was down."""
    if kind == "none":
        return Period("none", NO_PERIOD_START, None, None)
    zone = ZoneInfo(time_zone)
    today = now.astimezone(zone).date()
    if kind == "day":
        start, end = today, today + timedelta(days=1)
    elif kind == "week":
        start = today - timedelta(days=today.weekday())
        end = start + timedelta(days=7)
    elif kind == "month":
        start = today.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown budget period {kind!r}")
    return Period(kind, start, _midnight(start, zone), _midnight(end, zone))


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    # Local midnight as an instant; where a DST change skips midnight, zoneinfo maps the missing
    # wall time forward by the gap (PEP 495), the first instant of that local day.
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def time_zone_is_known(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True

"""Budgets: pricing of a call, and the check of a reservation against a budget's caps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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

"""Request field checks shared by the services; each failure names the field it is about."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from edrs_core.errors import InvalidArgument


def text(value: str, field: str, *, max_length: int, required: bool = True) -> str:
    """`value` stripped of surrounding white space, within bounds."""
    cleaned = value.strip()
    if required and not cleaned:
        raise InvalidArgument(f"{field} is required", field=field)
    if len(cleaned) > max_length:
        raise InvalidArgument(
            f"{field} is {len(cleaned)} characters long; the limit is {max_length}", field=field
        )
    return cleaned


def text_list(values: Sequence[str], field: str, *, max_items: int, max_length: int) -> list[str]:
    if len(values) > max_items:
        raise InvalidArgument(
            f"{field} has {len(values)} items; the limit is {max_items}", field=field
        )
    return [text(v, f"{field}[{i}]", max_length=max_length) for i, v in enumerate(values)]


def int_range(value: int, field: str, *, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be between {low} and {high}, got {value}", field=field)
    return value


def float_range(value: float, field: str, *, low: float, high: float) -> float:
    if not low <= value <= high:
        raise InvalidArgument(f"{field} must be between {low} and {high}, got {value}", field=field)
    return value


def limit(value: int, field: str, *, default: int, maximum: int) -> int:
    """A result-count request: 0 means `default`, above `maximum` is capped, negative is refused."""
    if value < 0:
        raise InvalidArgument(f"{field} must not be negative, got {value}", field=field)
    if value == 0:
        return default
    return min(value, maximum)


T = TypeVar("T")
K = TypeVar("K", bound=int)
K_contra = TypeVar("K_contra", bound=int, contravariant=True)


class EnumNames(Protocol[K_contra]):
    """A generated protobuf enum (e.g. `persona_pb2.PersonaStatus`): it can name its numbers."""

    def Name(self, number: K_contra) -> str: ...  # noqa: N802 (protobuf's method name)


def enum_value(value: int, field: str, choices: Mapping[K, T], enum: EnumNames[K]) -> T:
    """The domain value that proto enum number `value` stands for; a number missing from `choices`
    (unset, or sent by a newer client) names `field` and lists the accepted names."""
    for number, choice in choices.items():
        if number == value:
            return choice
    allowed = ", ".join(enum.Name(number) for number in choices if number != 0)
    if value == 0:
        raise InvalidArgument(f"{field} is required: one of {allowed}", field=field)
    raise InvalidArgument(f"{field} must be one of {allowed}, got {value}", field=field)

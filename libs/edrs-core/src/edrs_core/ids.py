"""Identifiers: UUIDv7, so ids sort by creation time and index well."""

from __future__ import annotations

import uuid

from uuid6 import uuid7

from edrs_core.errors import InvalidArgument


def new_id() -> uuid.UUID:
    return uuid.UUID(bytes=uuid7().bytes)


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    """The UUID in `value`, or InvalidArgument naming `field`."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(f"{field} must be a UUID, got {value!r}", field=field) from None

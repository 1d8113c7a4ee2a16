"""Cursor pagination shared by every List RPC: opaque page tokens over a (created_at, id) key."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edrs_core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class Cursor:
    """The last row of the previous page; the next page starts strictly after it."""

    created_at: datetime
    id: str


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps({"t": cursor.created_at.isoformat(), "id": cursor.id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> Cursor | None:
    """None for an empty token; InvalidArgument naming the field for a token we did not issue."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return Cursor(datetime.fromisoformat(data["t"]), str(data["id"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page.page_token is not a token this service issued", field="page.page_token"
        ) from None


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page.page_size must not be negative", field="page.page_size")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


async def keyset_page(
    db: Any,
    *,
    table: str,
    columns: str,
    where: str,
    args: Sequence[Any],
    page_token: str,
    requested_size: int,
    descending: bool = False,
) -> tuple[list[Any], str]:
    """One page of `table` ordered by (created_at, id) — newest first when `descending` — and the
    token of the next page ("" at the end).

    `table`, `columns` and `where` come from the service's own code, never from a request;
    request values travel only in `args` as bind parameters.
    """
    cursor = decode_cursor(page_token)
    size = page_size(requested_size)
    params = list(args)
    condition = where
    after, order = ("<", "created_at DESC, id DESC") if descending else (">", "created_at, id")
    if cursor is not None:
        condition += f" AND (created_at, id) {after} (${len(params) + 1}, ${len(params) + 2}::uuid)"
        params += [cursor.created_at, cursor.id]
    rows = await db.fetch(
        f"SELECT {columns} FROM {table} WHERE {condition} ORDER BY {order} LIMIT {size + 1}",
        *params,
    )
    if len(rows) <= size:
        return list(rows), ""
    last = rows[size - 1]
    return list(rows[:size]), encode_cursor(Cursor(last["created_at"], str(last["id"])))

"""Base of every request and response body: camelCase JSON, unknown fields refused."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Text patterns shared by request bodies. Explicit ranges rather than \s or \p classes, so ECMA-262
# (clients, fuzzers reading the schema) and Python agree on what matches. No control characters:
# PostgreSQL text cannot hold NUL, and none belongs in a name.
SINGLE_LINE = r"^[^\x00-\x1f\x7f-\x9f]*$"
# A single line with at least one character that is not white space.
REQUIRED_LINE = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
# Free text: tabs and line breaks allowed, other control characters not.
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"


def _rfc3339_only(value: Any) -> Any:
    """pydantic would take a number (or a string of one) as Unix seconds; the API documents RFC
    3339 text, so anything else is refused rather than read as a date in 1970."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or "T" not in value.upper():
        raise ValueError("an RFC 3339 date-time with a time zone, e.g. 2026-12-31T17:00:00Z")
    return value


# The largest values the protobuf fields behind query parameters hold (int32, int64): a larger
# number is refused with 422 rather than failing the call to the service with a 500.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# Caps in a JSON body (budgets): the largest integer every JSON client reads exactly (IEEE double),
# and below int64. A bound of INT64_MAX itself is not exact as a double, so schema validators that
# compare as doubles (schemathesis did) disagreed with the route about 2**63 - 1 + 192.
JSON_INT_MAX = 2**53 - 1

# A date-time on the wire: RFC 3339 text with a time zone, nothing else.
Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]


def _iso_date_only(value: Any) -> Any:
    """As for date-times: a number is not read as Unix seconds; a day is YYYY-MM-DD."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise ValueError("a day as YYYY-MM-DD, e.g. 2026-12-31")
    return value


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# A day on the wire: YYYY-MM-DD text, nothing else.
IsoDate = Annotated[date, BeforeValidator(_iso_date_only)]


class ApiModel(BaseModel):
    """Bodies are camelCase on the wire, snake_case in Python; an unknown field is a 422."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class PageOf(ApiModel):
    """Cursor pagination: pass `nextPageToken` back as `pageToken`; empty on the last page."""

    next_page_token: str = Field(default="", description="Token of the next page; empty at the end")

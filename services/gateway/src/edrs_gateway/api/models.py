"""Base of every request and response body: camelCase JSON, unknown fields refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Text patterns shared by request bodies. Explicit ranges rather than \s or \p classes, so ECMA-262
# (clients, fuzzers reading the schema) and Python agree on what matches. No control characters:
# PostgreSQL text cannot hold NUL, and none belongs in a name.
SINGLE_LINE = r"^[^\x00-\x1f\x7f-\x9f]*$"
# A single line with at least one character that is not white space.
REQUIRED_LINE = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
# Free text: tabs and line breaks allowed, other control characters not.
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"


class ApiModel(BaseModel):
    """Bodies are camelCase on the wire, snake_case in Python; an unknown field is a 422."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class PageOf(ApiModel):
    """Cursor pagination: pass `nextPageToken` back as `pageToken`; empty on the last page."""

    next_page_token: str = Field(default="", description="Token of the next page; empty at the end")

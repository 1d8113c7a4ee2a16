"""Base of every request and response body: camelCase JSON, unknown fields refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Bodies are camelCase on the wire, snake_case in Python; an unknown field is a 422."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class PageOf(ApiModel):
    """Cursor pagination: pass `nextPageToken` back as `pageToken`; empty on the last page."""

    next_page_token: str = Field(default="", description="Token of the next page; empty at the end")

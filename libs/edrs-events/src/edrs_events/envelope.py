"""The event envelope (`BaseEvent`): validation, JSON wire form, CloudEvents 1.0 mapping."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import uuid6
from pydantic import BaseModel, ConfigDict, Field, field_validator

# `<domain>.<action>`, both lower snake case: "knowledge.knowledge_updated".
EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*\.[a-z][a-z0-9]*(?:_[a-z0-9]+)*$"
_EVENT_TYPE_RE = re.compile(EVENT_TYPE_PATTERN)

CLOUDEVENTS_SPEC_VERSION = "1.0"
# CloudEvents extension attribute names must be lower-case alphanumerics, so the envelope
# fields that are not core CloudEvents attributes map to these names.
_CE_EXTENSIONS = {
    "priority": "priority",
    "client_id": "clientid",
    "correlation_id": "correlationid",
    "causation_id": "causationid",
    "schema_version": "schemaversion",
}


class Priority(StrEnum):
    """Delivery lane of an event; critical and high are served before a backlog of low."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for critical up to 3 for low: the order lanes are drained in."""
        return _RANKS[self]


_RANKS = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}
PRIORITIES_BY_RANK: tuple[Priority, ...] = tuple(sorted(Priority, key=lambda p: p.rank))


def validate_event_type(event_type: str, *, field: str = "event_type") -> str:
    """Return `event_type` if it follows `<domain>.<action>` in lower snake case, else raise."""
    if not _EVENT_TYPE_RE.match(event_type):
        raise ValueError(
            f"{field} {event_type!r} must be '<domain>.<action>' in lower snake case, "
            "e.g. 'knowledge.knowledge_updated'"
        )
    return event_type


class BaseEvent(BaseModel):
    """One thing that happened in the fleet, as every service and integrator sees it on the wire."""

    # Unknown envelope fields from newer publishers are ignored, so consumers keep working when
    # the envelope gains optional fields.
    model_config = ConfigDict(extra="ignore", frozen=True, use_enum_values=False)

    event_id: UUID = Field(default_factory=uuid6.uuid7, description="UUIDv7, unique per event")
    event_type: str = Field(description="'<domain>.<action>' in lower snake case")
    source_container: str = Field(min_length=1, description="service or client that emitted it")
    priority: Priority = Priority.NORMAL
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    client_id: str | None = Field(default=None, description="tenant the event belongs to")
    correlation_id: str | None = None
    causation_id: str | None = Field(
        default=None, description="event_id of the event that caused this one"
    )
    schema_version: int = Field(default=1, ge=1, description="version of the payload schema")
    payload: dict[str, Any] = Field(default_factory=dict)
    # String-to-string only, so it maps onto broker headers; carries W3C `traceparent`/`tracestate`.
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("event_id")
    @classmethod
    def _check_uuid7(cls, value: UUID) -> UUID:
        if value.version != 7:
            raise ValueError(f"event_id {value} must be a UUIDv7 (got version {value.version})")
        return value

    @field_validator("event_type")
    @classmethod
    def _check_event_type(cls, value: str) -> str:
        return validate_event_type(value)

    @field_validator("occurred_at")
    @classmethod
    def _check_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware (UTC)")
        return value.astimezone(UTC)

    @property
    def domain(self) -> str:
        """The owning domain, the part before the dot."""
        return self.event_type.split(".", 1)[0]

    @property
    def action(self) -> str:
        """The part after the dot."""
        return self.event_type.split(".", 1)[1]

    @property
    def traceparent(self) -> str | None:
        """W3C trace context of the publisher, if any."""
        return self.metadata.get("traceparent")

    def to_json(self) -> bytes:
        """The JSON wire form (UTF-8 bytes)."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> BaseEvent:
        """Parse the JSON wire form."""
        return cls.model_validate_json(data)

    def caused(self, event_type: str, payload: dict[str, Any], **fields: Any) -> BaseEvent:
        """A follow-up event: same tenant and correlation, this event as its cause."""
        fields.setdefault("source_container", self.source_container)
        return BaseEvent(
            event_type=event_type,
            payload=payload,
            client_id=fields.pop("client_id", self.client_id),
            correlation_id=fields.pop("correlation_id", self.correlation_id or str(self.event_id)),
            causation_id=str(self.event_id),
            **fields,
        )


def envelope_json_schema() -> dict[str, Any]:
    """The envelope's JSON Schema, as checked into `schemas/envelope.schema.json`."""
    schema = BaseEvent.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://edrs.dev/schemas/events/envelope.schema.json"
    schema["properties"]["event_type"]["pattern"] = EVENT_TYPE_PATTERN
    schema["required"] = sorted({*schema.get("required", []), "event_id", "occurred_at"})
    return schema


def to_cloudevent(event: BaseEvent) -> dict[str, Any]:
    """The event as a CloudEvents 1.0 structured-mode JSON object (for HTTP)."""
    ce: dict[str, Any] = {
        "specversion": CLOUDEVENTS_SPEC_VERSION,
        "id": str(event.event_id),
        "source": f"/edrs/{event.source_container}",
        "type": event.event_type,
        "time": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "dataschema": f"urn:edrs:event:{event.event_type}:v{event.schema_version}",
        "data": event.payload,
    }
    for field, attribute in _CE_EXTENSIONS.items():
        value = getattr(event, field)
        if value is not None:
            ce[attribute] = str(value)
    metadata = dict(event.metadata)
    # The distributed-tracing extension defines these two attributes by the W3C names.
    for key in ("traceparent", "tracestate"):
        if key in metadata:
            ce[key] = metadata.pop(key)
    if metadata:
        ce["edrsmetadata"] = json.dumps(metadata, sort_keys=True)
    return ce


def from_cloudevent(ce: dict[str, Any]) -> BaseEvent:
    """Rebuild an envelope from a CloudEvents 1.0 structured-mode JSON object."""
    if ce.get("specversion") != CLOUDEVENTS_SPEC_VERSION:
        raise ValueError(
            f"specversion must be {CLOUDEVENTS_SPEC_VERSION!r}, got {ce.get('specversion')!r}"
        )
    source = str(ce.get("source", ""))
    fields: dict[str, Any] = {
        "event_id": ce.get("id"),
        "event_type": ce.get("type"),
        "source_container": source.removeprefix("/edrs/"),
        "payload": ce.get("data") or {},
    }
    if "time" in ce:
        fields["occurred_at"] = ce["time"]
    for field, attribute in _CE_EXTENSIONS.items():
        if attribute in ce:
            fields[field] = ce[attribute]
    metadata: dict[str, str] = json.loads(ce["edrsmetadata"]) if "edrsmetadata" in ce else {}
    for key in ("traceparent", "tracestate"):
        if key in ce:
            metadata[key] = ce[key]
    fields["metadata"] = metadata
    return BaseEvent.model_validate(fields)

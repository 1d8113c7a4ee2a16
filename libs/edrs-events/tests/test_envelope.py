"""Unit tests of the envelope: validation, wire form, JSON Schema and the CloudEvents mapping."""

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import jsonschema
import pytest
from edrs_events import BaseEvent, Priority, envelope_json_schema, from_cloudevent, to_cloudevent
from edrs_events.catalog import envelope_schema_document
from pydantic import ValidationError


def make(**fields: object) -> BaseEvent:
    base: dict[str, object] = {
        "event_type": "task.task_created",
        "source_container": "task",
        "payload": {"task_id": "t1", "title": "Draft"},
    }
    return BaseEvent.model_validate(base | fields)


def test_defaults_fill_id_time_and_priority() -> None:
    event = make()
    assert event.event_id.version == 7
    assert event.occurred_at.tzinfo is not None and event.occurred_at.utcoffset() == timedelta(0)
    assert event.priority is Priority.NORMAL
    assert event.schema_version == 1
    assert (event.domain, event.action) == ("task", "task_created")


def test_ids_are_time_ordered() -> None:
    ids = [make().event_id for _ in range(50)]
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    "bad", ["Task.created", "task", "task.TaskCreated", "task.task-created", "a.b.c", ".x", "task."]
)
def test_event_type_must_be_domain_dot_action_snake_case(bad: str) -> None:
    with pytest.raises(ValidationError, match="event_type"):
        make(event_type=bad)


def test_event_id_must_be_uuid7() -> None:
    with pytest.raises(ValidationError, match="UUIDv7"):
        make(event_id=uuid.uuid4())


def test_naive_time_is_refused_and_aware_time_is_stored_as_utc() -> None:
    with pytest.raises(ValidationError, match="occurred_at"):
        make(occurred_at=datetime(2026, 1, 1, 12, 0))
    event = make(occurred_at=datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))))
    assert event.occurred_at == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def test_json_round_trip_keeps_every_field() -> None:
    event = make(
        priority=Priority.CRITICAL,
        client_id="acme",
        correlation_id="corr-1",
        causation_id="cause-1",
        metadata={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"},
    )
    assert BaseEvent.from_json(event.to_json()) == event


def test_consumers_ignore_envelope_fields_they_do_not_know() -> None:
    wire = json.loads(make().to_json())
    wire["added_in_v2"] = {"anything": True}
    assert BaseEvent.from_json(json.dumps(wire)).event_type == "task.task_created"


def test_caused_event_inherits_tenant_and_correlation() -> None:
    cause = make(client_id="acme")
    effect = cause.caused("task.task_created", {"task_id": "t2", "title": "follow-up"})
    assert effect.causation_id == str(cause.event_id)
    assert effect.correlation_id == str(cause.event_id)
    assert effect.client_id == "acme"


def test_checked_in_envelope_schema_is_current() -> None:
    assert envelope_schema_document() == envelope_json_schema(), (
        "schemas/envelope.schema.json is stale: regenerate it from envelope_json_schema()"
    )


def test_wire_json_validates_against_the_envelope_schema() -> None:
    schema = envelope_schema_document()
    jsonschema.validate(json.loads(make(client_id="acme").to_json()), schema)
    broken = json.loads(make().to_json()) | {"event_type": "NotSnake"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_cloudevents_structured_mapping_round_trips() -> None:
    event = make(
        priority=Priority.HIGH,
        client_id="acme",
        correlation_id="c1",
        metadata={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "origin": "sdk"},
    )
    ce = to_cloudevent(event)
    assert ce["specversion"] == "1.0"
    assert ce["id"] == str(event.event_id)
    assert ce["type"] == "task.task_created"
    assert ce["source"] == "/edrs/task"
    assert ce["data"] == event.payload
    assert ce["priority"] == "high" and ce["clientid"] == "acme"
    assert ce["traceparent"] == event.metadata["traceparent"]
    assert all(k.isalnum() and k.islower() for k in ce), "CloudEvents attribute names are [a-z0-9]"
    assert from_cloudevent(json.loads(json.dumps(ce))) == event


def test_cloudevent_with_wrong_specversion_is_refused() -> None:
    ce = to_cloudevent(make()) | {"specversion": "0.3"}
    with pytest.raises(ValueError, match="specversion"):
        from_cloudevent(ce)

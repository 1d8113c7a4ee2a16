"""Unit tests of the schema catalog: owners, payload validation, errors that name the field."""

import json
from typing import Any

import pytest
from edrs_events import (
    BaseEvent,
    EventValidationError,
    UnknownEventTypeError,
    default_catalog,
)
from jsonschema.exceptions import best_match

FIRST_TYPES = [
    "persona.persona_created",
    "persona.message_received",
    "persona.response_delivered",
    "memory.episode_stored",
    "memory.fact_superseded",
    "knowledge.document_ingested",
    "reasoning.trace_recorded",
    "task.task_created",
    "research.source_registered",
    "integration.connector_created",
    "integration.webhook_received",
    "gateway.event_published",
]


def event(event_type: str, payload: dict[str, object]) -> BaseEvent:
    return BaseEvent(event_type=event_type, source_container="test", payload=payload)


def test_catalog_registers_the_fleets_first_types_with_their_owners() -> None:
    catalog = default_catalog()
    for name in FIRST_TYPES:
        entry = catalog.get(name)
        assert entry.owner == name.split(".")[0]
        assert entry.payload_schema["type"] == "object"
    # Which owners are services of the fleet is checked where the fleet is installed:
    # tests/contracts/test_service_registry.py (this suite also runs with edrs-events alone).


def test_valid_payload_passes() -> None:
    default_catalog().validate(event("task.task_created", {"task_id": "t1", "title": "Draft"}))


def test_missing_required_field_is_named() -> None:
    with pytest.raises(EventValidationError) as caught:
        default_catalog().validate(event("task.task_created", {"task_id": "t1"}))
    assert caught.value.field == "payload.title"
    assert "payload.title" in str(caught.value)


def test_wrong_type_in_nested_field_is_named() -> None:
    bad = {"persona_id": "p1", "fields": ["name", 7]}
    with pytest.raises(EventValidationError) as caught:
        default_catalog().validate(event("persona.persona_updated", bad))
    assert caught.value.field == "payload.fields.1"


def test_enum_violation_is_named() -> None:
    catalog = default_catalog()
    catalog.register(
        "task.task_finished",
        "task",
        {
            "type": "object",
            "properties": {"status": {"enum": ["succeeded", "failed", "cancelled"]}},
            "required": ["status"],
        },
    )
    with pytest.raises(EventValidationError, match=r"payload\.status"):
        catalog.validate(event("task.task_finished", {"status": "done"}))


def test_unknown_type_is_refused() -> None:
    with pytest.raises(UnknownEventTypeError, match="event_type"):
        default_catalog().validate(event("task.task_teleported", {}))


def test_added_optional_fields_are_accepted() -> None:
    payload = {"task_id": "t1", "title": "Draft", "estimated_minutes": 30}
    default_catalog().validate(event("task.task_created", payload))


def test_register_requires_a_known_owner_and_a_valid_schema() -> None:
    catalog = default_catalog()
    with pytest.raises(ValueError, match="owner"):
        catalog.register("billing.invoice_sent", "billing", {"type": "object"})
    with pytest.raises(Exception, match="not valid"):
        catalog.register("task.task_paused", "task", {"type": "objekt"})
    catalog.register("task.task_paused", "task", {"type": "object", "required": ["task_id"]})
    assert "task.task_paused" in catalog
    assert "task.task_paused" not in default_catalog(), "default_catalog() returns a fresh copy"


IMPORT_PROBE = """
import sys
import edrs_events
from edrs_events import BaseEvent, EventValidationError, SchemaCatalog

loaded_at_import = "lark" in sys.modules
catalog = SchemaCatalog(services=["task"])
catalog.register(
    "task.linked", "task", {"type": "object", "properties": {"u": {"type": "string", "format": "iri"}}}
)
catalog.validate(BaseEvent(event_type="task.linked", source_container="t", payload={"u": "https://example.org/ä"}))
try:
    catalog.validate(BaseEvent(event_type="task.linked", source_container="t", payload={"u": "no iri"}))
    refused = ""
except EventValidationError as exc:
    refused = exc.field
print(loaded_at_import, refused)
"""


def test_importing_the_sdk_defers_the_iri_grammar_and_iri_values_are_still_checked() -> None:
    """`import edrs_events` does not build rfc3987-syntax's Lark parser (a second of CPU per
    process); the first `iri` value checked builds it, and an invalid one is still refused."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("rfc3987_syntax") is None:
        pytest.skip("jsonschema's format-nongpl extra is not installed")
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "payload.u"]


def _valid_value(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "string":
        return "x" * max(1, schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return None


def _payloads(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A valid payload, then one variant per way each property (or `required`) can break."""
    props: dict[str, Any] = schema.get("properties", {})
    valid = {name: _valid_value(sub) for name, sub in props.items()}
    variants: list[dict[str, Any]] = [valid, {}]
    wrong: list[Any] = ["", "zz-not-listed", -1, 10**6, 1.5, True, None, [], {}, ("a",), "x" * 300]
    for name in props:
        variants.append({k: v for k, v in valid.items() if k != name})
        variants.extend({**valid, name: value} for value in wrong)
    variants.append([])  # type: ignore[arg-type]  # not even an object
    return variants


def test_the_fast_validator_agrees_with_jsonschema_on_every_plain_catalog_type() -> None:
    """Plain payload schemas are checked by jsonschema-rs first; its verdict must be jsonschema's
    (the reference, which still names the field) on valid payloads and on every kind of break,
    except a tuple, which jsonschema refuses as an array and the wire carries as one."""
    catalog = default_catalog()
    fast = [entry for entry in catalog if entry._fast is not None]
    assert len(fast) >= len(catalog) - 5, "most shipped schemas are plain"
    checked = 0
    for entry in fast:
        for payload in _payloads(entry.payload_schema):
            reference = best_match(entry.validator().iter_errors(payload))
            if isinstance(payload, dict) and any(isinstance(v, tuple) for v in payload.values()):
                continue
            e = BaseEvent.model_construct(event_type=entry.name, payload=payload)
            try:
                catalog.validate(e)
                outcome = None
            except EventValidationError as exc:
                outcome = exc.field
            assert (outcome is None) == (reference is None), (entry.name, payload)
            checked += 1
    assert checked > 1000


def test_schemas_with_formats_patterns_or_references_stay_with_jsonschema() -> None:
    catalog = default_catalog()
    formats = [e for e in catalog if '"format"' in json.dumps(e.payload_schema)]
    assert formats and all(e._fast is None for e in formats)
    own = catalog.copy()
    own.register(
        "task.patterned", "task", {"type": "object", "properties": {"k": {"pattern": "^a"}}}
    )
    own.register(
        "task.referenced", "task", {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"}
    )
    assert own.get("task.patterned")._fast is None and own.get("task.referenced")._fast is None
    with pytest.raises(EventValidationError, match=r"payload\.k"):
        own.validate(event("task.patterned", {"k": "b"}))

"""The schema catalog: every event type with its owning service and payload JSON Schema."""

from __future__ import annotations

import json
import types
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from importlib.metadata import entry_points
from typing import Any

from edrs_events._formats import defer_rfc3987_syntax

defer_rfc3987_syntax()  # before jsonschema: see _formats

import jsonschema  # noqa: E402

jsonschema_rs: types.ModuleType | None
try:
    import jsonschema_rs
except ImportError:  # pragma: no cover - a dependency; the catalog works without it, slower
    jsonschema_rs = None
from jsonschema.exceptions import ValidationError, best_match  # noqa: E402

from edrs_events.envelope import BaseEvent, validate_event_type  # noqa: E402

# The entry-point group in which each service declares itself (read by `edrs_core.registry`).
SERVICE_ENTRY_POINT_GROUP = "edrs.services"


def installed_services() -> frozenset[str]:
    """The names of the services installed in this environment (their entry points)."""
    return frozenset(point.name for point in entry_points(group=SERVICE_ENTRY_POINT_GROUP))


class EventValidationError(ValueError):
    """An event cannot be published; `field` names the offending field (dotted path)."""

    def __init__(self, event_type: str, field: str, reason: str) -> None:
        self.event_type = event_type
        self.field = field
        self.reason = reason
        super().__init__(f"{event_type}: field '{field}': {reason}")


class UnknownEventTypeError(EventValidationError):
    """The event type is not registered in the catalog."""

    def __init__(self, event_type: str) -> None:
        super().__init__(
            event_type,
            "event_type",
            f"names an unknown event type {event_type!r}; register it in the catalog first",
        )


@dataclass(frozen=True)
class EventType:
    """One catalog entry."""

    name: str
    owner: str
    payload_schema: dict[str, Any]
    schema_version: int = 1
    description: str = ""
    _validator: jsonschema.protocols.Validator | None = field(
        default=None, repr=False, compare=False
    )
    # jsonschema-rs's compiled form of a plain schema (see `_plain`), None for the others.
    _fast: Any = field(default=None, repr=False, compare=False)

    def validator(self) -> jsonschema.protocols.Validator:
        """The compiled validator for the payload schema."""
        if self._validator is None:
            raise RuntimeError(f"event type {self.name} was made without its validator")
        return self._validator


# Keywords whose meaning jsonschema (Python) and jsonschema-rs share exactly; a schema using only
# these (and no `format`, `pattern`, `$ref`, `uniqueItems`, `multipleOf`: regex dialects, format
# implementations, reference retrieval and number equality differ between them) is "plain".
_PLAIN_KEYWORDS = frozenset(
    {
        "$schema", "$comment", "title", "description", "default", "examples", "deprecated",
        "readOnly", "writeOnly", "type", "enum", "const", "required", "minLength", "maxLength",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems",
        "minProperties", "maxProperties",
    }
)  # fmt: skip
_SUBSCHEMA = frozenset({"items", "additionalProperties", "not"})
_SUBSCHEMAS = frozenset({"anyOf", "oneOf", "allOf"})


def _plain(schema: object) -> bool:
    """Whether `schema` uses only keywords both validators implement identically."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict):
        return False
    for key, value in schema.items():
        if key == "properties":
            if not isinstance(value, dict) or not all(_plain(v) for v in value.values()):
                return False
        elif key in _SUBSCHEMA:
            if not _plain(value):
                return False
        elif key in _SUBSCHEMAS:
            if not isinstance(value, list) or not all(_plain(v) for v in value):
                return False
        elif key not in _PLAIN_KEYWORDS:
            return False
    return True


def _fast_validator(schema: dict[str, Any]) -> Any:
    """jsonschema-rs's validator of a plain schema (about 1 µs a payload where jsonschema takes
    20), or None: not plain, or jsonschema-rs not installed."""
    if jsonschema_rs is None or not _plain(schema):
        return None
    return jsonschema_rs.validator_for(schema)


def _field_of(error: ValidationError) -> str:
    path = ["payload", *(str(p) for p in error.absolute_path)]
    # For a missing property the path points at its parent object; name the property itself.
    required = error.validator_value  # for "required": the list of required names
    if (
        error.validator == "required"
        and isinstance(error.instance, Mapping)
        and isinstance(required, list)
    ):
        missing = [name for name in required if name not in error.instance]
        if missing:
            path.append(missing[0])
    return ".".join(path)


class SchemaCatalog:
    """Event types by name; validates payloads before anything is published."""

    def __init__(
        self, types: Mapping[str, EventType] | None = None, services: Iterable[str] = ()
    ) -> None:
        self._types: dict[str, EventType] = dict(types or {})
        # Services that may own types: those named by the catalog document, and owners so far.
        self._services = {*services, *(t.owner for t in self._types.values())}

    def register(
        self,
        name: str,
        owner: str,
        payload_schema: dict[str, Any],
        *,
        schema_version: int = 1,
        description: str = "",
    ) -> EventType:
        """Add (or replace) an event type. `owner` is the service that states the fact: the
        type's domain (`<owner>.<action>`), and a service of the fleet, i.e. the owner of a type
        of this catalog or a service installed here (see `installed_services`)."""
        validate_event_type(name, field="name")
        domain = name.partition(".")[0]
        if owner != domain:
            raise ValueError(
                f"owner {owner!r} of {name} must be its domain {domain!r}: "
                "an event type is named '<owning service>.<action>'"
            )
        if owner not in self._services and owner not in installed_services():
            raise ValueError(
                f"owner {owner!r} of {name} is not a service of the fleet: it owns no type of "
                f"the catalog and no installed package declares it as an "
                f"{SERVICE_ENTRY_POINT_GROUP!r} entry point"
            )
        validator_cls = jsonschema.validators.validator_for(payload_schema)
        validator_cls.check_schema(payload_schema)
        entry = EventType(
            name=name,
            owner=owner,
            payload_schema=payload_schema,
            schema_version=schema_version,
            description=description,
            _validator=validator_cls(payload_schema, format_checker=validator_cls.FORMAT_CHECKER),
            _fast=_fast_validator(payload_schema),
        )
        self._types[name] = entry
        return entry

    def get(self, name: str) -> EventType:
        """The entry for `name`, or `UnknownEventTypeError`."""
        try:
            return self._types[name]
        except KeyError:
            raise UnknownEventTypeError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[EventType]:
        return iter(sorted(self._types.values(), key=lambda t: t.name))

    def __len__(self) -> int:
        return len(self._types)

    def validate(self, event: BaseEvent) -> None:
        """Raise `EventValidationError` naming the field if `event` breaks its type's schema."""
        entry = self.get(event.event_type)
        if entry._fast is not None:
            # A plain schema: jsonschema-rs's "valid" is final. Its "invalid", or a value it cannot
            # take (a Python type that is not JSON), goes to jsonschema, which names the field.
            try:
                if entry._fast.is_valid(event.payload):
                    return
            except Exception:  # any doubt is settled by jsonschema below
                pass
        error = best_match(entry.validator().iter_errors(event.payload))
        if error is not None:
            raise EventValidationError(event.event_type, _field_of(error), error.message)

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> SchemaCatalog:
        """Build a catalog from the `catalog.json` document shape."""
        # The shipped document is checked against the fleet's declared services by the
        # repository's tests (tests/contracts/test_service_registry.py); an integrator's
        # environment has no services installed to check it against.
        catalog = cls(services={spec["owner"] for spec in document["event_types"].values()})
        for name, spec in document["event_types"].items():
            catalog.register(
                name,
                spec["owner"],
                spec["payload_schema"],
                schema_version=spec.get("schema_version", 1),
                description=spec.get("description", ""),
            )
        return catalog

    def copy(self) -> SchemaCatalog:
        """An independent copy, for a service that registers types of its own."""
        return SchemaCatalog(self._types, self._services)


@cache
def _packaged_document() -> dict[str, Any]:
    text = resources.files("edrs_events").joinpath("schemas/catalog.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


@cache
def _packaged_catalog() -> SchemaCatalog:
    return SchemaCatalog.from_json(_packaged_document())


def default_catalog() -> SchemaCatalog:
    """A fresh catalog holding every event type shipped with the package.

    Fresh: registering a type in it changes no other catalog. Its entries (immutable, each with
    its compiled validator) are built once per process and shared, since compiling every schema
    took 40-60 ms of CPU for each bus, outbox or caller that asked."""
    return _packaged_catalog().copy()


def envelope_schema_document() -> dict[str, Any]:
    """The checked-in envelope JSON Schema."""
    text = (
        resources.files("edrs_events").joinpath("schemas/envelope.schema.json").read_text("utf-8")
    )
    document: dict[str, Any] = json.loads(text)
    return document

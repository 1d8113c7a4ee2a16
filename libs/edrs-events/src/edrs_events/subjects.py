"""Subject and stream names: `<ns>.events.<priority>.<domain>.<action>`, the dead-letter stream."""

from __future__ import annotations

import re

from edrs_events.envelope import Priority

DEFAULT_NAMESPACE = "edrs"
# A type pattern is an event type, `<domain>.*`, `*.<action>`, `*.*`, `*` or `>` (everything).
_PATTERN_RE = re.compile(r"^(?:>|\*|(?:\*|[a-z][a-z0-9_]*)\.(?:\*|[a-z][a-z0-9_]*))$")
_CONSUMER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def validate_namespace(namespace: str) -> str:
    """A namespace is a lower-case token; it prefixes every subject and stream of one fleet."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", namespace):
        raise ValueError(f"namespace {namespace!r} must match [a-z][a-z0-9_]{{0,31}}")
    return namespace


def validate_consumer_name(consumer: str) -> str:
    """Consumer names become durable names; keep them to lower case, digits, '_' and '-'."""
    if not _CONSUMER_RE.match(consumer):
        raise ValueError(f"consumer {consumer!r} must match [a-z][a-z0-9_-]{{0,63}}")
    return consumer


def type_filter(pattern: str) -> str:
    """The subject tail (`<domain>.<action>`, wildcards allowed) for an event type pattern."""
    if not _PATTERN_RE.match(pattern):
        raise ValueError(
            f"event type pattern {pattern!r} must be '<domain>.<action>' where either part may be "
            "'*', or '*' / '>' for every type"
        )
    return "*.*" if pattern in ("*", ">") else pattern


class Subjects:
    """Names for one namespace (default `edrs`)."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE) -> None:
        self.namespace = validate_namespace(namespace)
        self.events_stream = f"{namespace.upper()}_EVENTS"
        self.dlq_stream = f"{namespace.upper()}_DLQ"
        self.events_root = f"{namespace}.events"
        self.dlq_root = f"{namespace}.dlq"

    def event(self, priority: Priority | str, event_type: str) -> str:
        return f"{self.events_root}.{Priority(priority).value}.{event_type}"

    def event_filter(self, priority: Priority | str | None, pattern: str) -> str:
        lane = "*" if priority is None else Priority(priority).value
        return f"{self.events_root}.{lane}.{type_filter(pattern)}"

    def dead_letter(self, consumer: str, event_type: str) -> str:
        return f"{self.dlq_root}.{consumer}.{event_type}"

    def lane_consumer(self, consumer: str, priority: Priority) -> str:
        return f"{consumer}_{priority.value}"

"""Pure logic of reading the bus: what makes a message malformed, and Pulsar's log sequence."""

from __future__ import annotations

import pytest
from edrs_events import BaseEvent, MalformedEvent, WireMessage, decode_event
from edrs_events.pulsar_bus import log_position, log_sequence


def event(client_id: str | None = "acme") -> BaseEvent:
    return BaseEvent(
        event_type="task.task_created",
        source_container="test",
        client_id=client_id,
        payload={"task_id": "t1", "title": "x"},
    )


def test_a_bare_envelope_decodes_without_headers() -> None:
    sent = event()
    assert decode_event(sent.to_json()) == sent
    assert decode_event(sent.to_json(), {}) == sent


def test_headers_that_copy_the_envelope_are_accepted() -> None:
    sent = event()
    assert decode_event(sent.to_json(), WireMessage.of(sent).headers()) == sent


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("edrs-client-id", "globex"),
        ("edrs-event-type", "persona.persona_archived"),
        ("edrs-priority", "critical"),
    ],
)
def test_a_header_contradicting_the_envelope_is_refused(header: str, value: str) -> None:
    sent = event()
    with pytest.raises(MalformedEvent, match=f"header {header}='{value}' contradicts"):
        decode_event(sent.to_json(), {**WireMessage.of(sent).headers(), header: value})


def test_a_tenant_header_on_an_event_of_no_tenant_is_refused() -> None:
    with pytest.raises(MalformedEvent, match="edrs-client-id"):
        decode_event(event(client_id=None).to_json(), {"edrs-client-id": "acme"})


@pytest.mark.parametrize(
    "body", [b"", b"{not json", b"\xff\xfe", b'{"event_type": "task.x"}', b"[]"]
)
def test_a_body_that_is_no_envelope_is_refused_without_quoting_it(body: bytes) -> None:
    with pytest.raises(MalformedEvent, match="unparseable envelope") as caught:
        decode_event(body)
    if body:
        assert body.decode("utf-8", "replace") not in str(caught.value)


def test_pulsar_log_sequences_grow_with_entries_and_ledgers_and_round_trip() -> None:
    positions = [(7, 0), (7, 1), (7, 49_999), (9, 0), (9, 1), (10_000_000, 16_777_215)]
    sequences = [log_sequence(ledger, entry) for ledger, entry in positions]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert [log_position(s) for s in sequences] == positions
    assert all(len(str(s)) <= 18 for s in sequences), "fits the gateway's Last-Event-ID"
    with pytest.raises(ValueError):
        log_sequence(1, 1 << 24)
    with pytest.raises(ValueError):
        log_position(0)

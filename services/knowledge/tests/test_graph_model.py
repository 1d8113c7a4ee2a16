"""Unit tests: the model extractor's answer checks (a name the passage does not write, an unknown
predicate, an invented date are dropped and counted) and the merge of its reading into the rules'
extraction (one entity per normalised name, relations once); and, on a real gRPC channel to an
address nobody listens on, that an unreachable reasoning service leaves the rules' reading."""

from __future__ import annotations

import json
import socket
import uuid
from datetime import date
from typing import Any

import pytest
from edrs_core.grpc_client import PeerChannels
from edrs_knowledge.graph import (
    CONCEPT,
    ORGANIZATION,
    PERSON,
    PLACE,
    PREDICATES,
    ExtractedRelation,
    extract,
)
from edrs_knowledge.graph_model import (
    MAX_ENTITIES,
    PREDICATE_MEANINGS,
    ModelEntity,
    ModelExtractor,
    Reading,
    UnreadableAnswer,
    answer_schema,
    find_name,
    merge,
    read_answer,
)
from edrs_proto.reasoning.v1 import reasoning_pb2_grpc

PASSAGE = "ACME Corporation acquired Globex in June 2024. Hank Scorpio is the CEO of Globex."


def answer(entities: list[dict[str, Any]], relations: list[dict[str, Any]]) -> str:
    return json.dumps({"entities": entities, "relations": relations})


def relation(subject: str, predicate: str, obj: str, when: str | None = None) -> dict[str, Any]:
    return {"subject": subject, "predicate": predicate, "object": obj, "valid_from": when}


def test_the_prompt_and_the_schema_name_every_rule_predicate() -> None:
    assert set(PREDICATE_MEANINGS) == set(PREDICATES)
    schema = answer_schema()
    relation_item = schema["properties"]["relations"]["items"]
    assert relation_item["properties"]["predicate"]["enum"] == list(PREDICATES)
    # Strict structured output: every property required, additional ones refused.
    assert set(relation_item["required"]) == set(relation_item["properties"])
    assert schema["properties"]["entities"]["maxItems"] == MAX_ENTITIES


def test_a_name_is_found_as_the_passage_writes_it() -> None:
    assert find_name("acme corporation", PASSAGE) == "ACME Corporation"
    assert find_name("Hank  Scorpio", "Hank\n Scorpio leads it.") == "Hank Scorpio"
    # Whole words only: "Glob" is not written, nor is "Acme Corp".
    assert find_name("Glob", PASSAGE) is None
    assert find_name("Acme Corp", PASSAGE) is None
    assert find_name("   ", PASSAGE) is None


def test_invented_names_and_unknown_predicates_are_dropped_and_counted() -> None:
    reading = read_answer(
        answer(
            [
                {"name": "acme corporation", "type": "organization"},
                {"name": "Globex", "type": "organization"},
                {"name": "Initech", "type": "organization"},  # not in the passage
                {"name": "Hank Scorpio", "type": "wizard"},  # a type outside the list
                {"name": "The", "type": "organization"},  # a sentence word
                {"name": 42, "type": "person"},
            ],
            [
                relation("ACME Corporation", "acquired", "globex", "2024-06-01"),
                relation("Hank Scorpio", "ceo_of", "Globex", "1999-01-01"),  # year not written
                relation("Hank Scorpio", "befriended", "Globex"),  # unknown predicate
                relation("Globex", "acquired", "Initech"),  # invented object
                relation("Globex", "acquired", "GLOBEX"),  # with itself
            ],
        ),
        PASSAGE,
    )
    assert reading.entities == [
        ModelEntity("ACME Corporation", ORGANIZATION),
        ModelEntity("Globex", ORGANIZATION),
        ModelEntity("Hank Scorpio", ""),
    ]
    assert reading.dropped_entities == 3
    assert [
        (r.subject.name, r.predicate, r.object.name, r.valid_from) for r in reading.relations
    ] == [
        ("ACME Corporation", "acquired", "Globex", date(2024, 6, 1)),
        ("Hank Scorpio", "ceo_of", "Globex", None),
    ]
    # The ends' types: from the answer's entity list, else from the predicate.
    assert reading.relations[1].subject.type == PERSON
    assert reading.dropped_relations == 3


@pytest.mark.parametrize(
    ("text", "given", "kept"),
    [
        ("Acme Corp acquired Globex in June 2024.", "2024-06-01", date(2024, 6, 1)),
        # The day is not written: the first of the month, as the rules read it.
        ("Acme Corp acquired Globex in June 2024.", "2024-06-20", date(2024, 6, 1)),
        ("Acme Corp acquired Globex on 20 June 2024.", "2024-06-20", date(2024, 6, 20)),
        ("Acme Corp acquired Globex on 2024-06-20.", "2024-06-20", date(2024, 6, 20)),
        ("Acme Corp acquired Globex in 2024.", "2024-01-01", date(2024, 1, 1)),
        # A month or a year the passage does not write.
        ("Acme Corp acquired Globex in 2024.", "2024-06-01", None),
        ("Acme Corp acquired Globex in June 2024.", "2023-06-01", None),
        ("Acme Corp acquired Globex in June 2024.", "June 2024", None),
    ],
)
def test_a_date_is_kept_only_as_far_as_the_passage_writes_it(
    text: str, given: str, kept: date | None
) -> None:
    reading = read_answer(answer([], [relation("Acme Corp", "acquired", "Globex", given)]), text)
    assert [r.valid_from for r in reading.relations] == [kept]


def test_a_relation_whose_ends_the_rules_typed_otherwise_is_refused() -> None:
    # What the embedded small model answered for this passage: "Acme Corp acquired Hank Scorpio".
    text = "Acme Corp acquired Globex in June 2024. Hank Scorpio is the CEO of Globex."
    rules = extract([(text, ())])
    reading = read_answer(
        answer(
            [],
            [
                relation("Acme Corp", "acquired", "Hank Scorpio", "2024-06-20"),
                relation("Globex", "located_in", "Acme Corp"),
                # A person and an organization may both act.
                relation("Hank Scorpio", "invested_in", "Acme Corp"),
            ],
        ),
        text,
    )
    merged, refused = merge(rules, [reading])
    assert refused == 2
    assert merged.passages[0].relations == [
        *rules.passages[0].relations,
        ExtractedRelation("hank scorpio", "invested_in", "acme", None),
    ]


def test_an_is_a_object_is_a_concept_without_its_article() -> None:
    text = "Globex is a logistics company."
    reading = read_answer(answer([], [relation("Globex", "is_a", "a logistics company")]), text)
    [r] = reading.relations
    assert (r.object.name, r.object.type) == ("logistics company", CONCEPT)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '["entities"]',
        '{"entities": {"name": "Globex"}, "relations": []}',
        '{"entities": [{"name": "Globex", "type": "organi',  # cut at max_tokens
    ],
)
def test_an_answer_that_is_not_the_schema_object_is_unreadable(text: str) -> None:
    with pytest.raises(UnreadableAnswer):
        read_answer(text, PASSAGE)


def test_the_models_names_join_the_rules_entities_and_relations_are_not_doubled() -> None:
    # The rules do not read "A and B work together as partners", nor a name in lower case.
    text = PASSAGE + " Globex and acme corp work together as partners."
    rules = extract([(text, ()), ("ACME is headquartered in Springfield.", ())])
    assert sorted((e.key, e.name, e.type) for e in rules.entities.values()) == [
        ("acme", "ACME Corporation", ORGANIZATION),
        ("globex", "Globex", ORGANIZATION),
        ("hank scorpio", "Hank Scorpio", PERSON),
        ("springfield", "Springfield", PLACE),
    ]
    assert rules.passages[0].relations == [
        ExtractedRelation("acme", "acquired", "globex", date(2024, 6, 1)),
        ExtractedRelation("hank scorpio", "ceo_of", "globex", None),
    ]
    first = read_answer(
        answer(
            [
                {"name": "acme corp", "type": "product"},  # the rules' ACME: an organization
                {"name": "Globex", "type": "organization"},
            ],
            [
                # Stated by the rules already, with their date: not added again.
                relation("ACME Corporation", "acquired", "Globex"),
                relation("Globex", "partner_of", "ACME CORP"),
                # The same fact the other way round: one partner_of.
                relation("acme corp", "partner_of", "Globex"),
            ],
        ),
        text,
    )
    second = Reading(entities=[ModelEntity("Springfield", PLACE)])
    merged, refused = merge(rules, [first, second])
    assert refused == 0

    # One entity per normalised name: the model's "acme corp" is the rules' ACME Corporation,
    # whose type stays the rules' and who gains the spelling (as the passage writes it).
    assert set(merged.entities) == set(rules.entities)
    assert merged.entities["acme"].type == ORGANIZATION
    assert merged.entities["acme"].aliases == ["ACME", "acme corp"]
    # The rules' relations stay, once each; the model adds one partner_of, not two.
    assert merged.passages[0].relations == [
        *rules.passages[0].relations,
        ExtractedRelation("globex", "partner_of", "acme", None),
    ]
    assert merged.passages[1].relations == rules.passages[1].relations
    assert merged.relation_count == rules.relation_count + 1
    # The rules' extraction itself is untouched.
    assert rules.entities["acme"].aliases == ["ACME"]


def test_a_name_the_rules_missed_becomes_an_entity() -> None:
    text = "Shipments go through the depot run by globex logistics in lower case."
    rules = extract([(text, ())])
    assert rules.entities == {}
    reading = read_answer(answer([{"name": "globex logistics", "type": "organization"}], []), text)
    merged, _ = merge(rules, [reading])
    [entity] = merged.entities.values()
    assert (entity.key, entity.name, entity.type) == (
        "globex logistics",
        "globex logistics",
        ORGANIZATION,
    )
    assert merged.passages[0].mentions == {"globex logistics"}


def test_a_passage_without_a_reading_keeps_the_rules() -> None:
    rules = extract([(PASSAGE, ())])
    merged, _ = merge(rules, [None])
    assert merged.entities.keys() == rules.entities.keys()
    assert merged.passages[0].relations == rules.passages[0].relations


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_reasoning_service_leaves_the_rules_reading() -> None:
    peers = PeerChannels("knowledge", {"reasoning": f"127.0.0.1:{_closed_port()}"})
    try:
        extractor = ModelExtractor(
            peers.stub(reasoning_pb2_grpc.ReasoningServiceStub),
            concurrency=2,
            max_passages=2,
            max_tokens=256,
            timeout=10.0,
        )
        texts = [PASSAGE, "Acme Corp is headquartered in Springfield.", "Initech owns Umbrella."]
        rules = extract([(t, ()) for t in texts])
        extended = await extractor.extend(
            "tenant-a", uuid.uuid4(), [(uuid.uuid4(), t) for t in texts], rules
        )
    finally:
        await peers.close()
    assert extended.entities.keys() == rules.entities.keys()
    assert [p.relations for p in extended.passages] == [p.relations for p in rules.passages]
    # Two passages sent (the cap), both failed; the third never sent.
    totals = extractor.totals
    assert (totals.sent, totals.read, totals.failed, totals.skipped) == (2, 0, 2, 1)


def test_the_model_extractor_without_extraction_is_refused_naming_both_settings() -> None:
    from edrs_core.settings import SettingsError, load_settings
    from edrs_knowledge.config import KnowledgeSettings

    base = {"EDRS_ENVIRONMENT": "test", "database_url": "postgresql://localhost/knowledge"}
    assert load_settings(KnowledgeSettings, **base).graph_extractor == "rules"
    with pytest.raises(SettingsError) as refused:
        load_settings(KnowledgeSettings, **base, graph_extractor="model", graph_extraction=False)
    message = str(refused.value)
    assert "EDRS_KNOWLEDGE_GRAPH_EXTRACTOR" in message
    assert "EDRS_KNOWLEDGE_GRAPH_EXTRACTION" in message

"""Unit tests: the rule-based graph extractor (names, aliases, relations, dates, normalisation)
and the names a query may mention."""

from __future__ import annotations

from datetime import date

import pytest
from edrs_knowledge.graph import (
    CONCEPT,
    ORGANIZATION,
    PERSON,
    PLACE,
    ExtractedRelation,
    extract,
    mentions,
    normalize_name,
    query_keys,
)

# A small corpus: three documents' passages (text, heading path), one fact each about Acme under
# three spellings, and the sentences that start with a capitalised common word.
CORPUS = [
    ("Press release\n\nAcme Corp acquired Globex in June 2024. Globex is a logistics company.", ("Press release",)),
    ("ACME Corporation (ACME) is headquartered in Springfield. Hank Scorpio is the CEO of Globex.", ()),
    ("Travel is booked through the portal. Keep one at home. Welcome to Acme.", ()),
    ("Dr Jane Smith works at International Business Machines (IBM) since 2021.", ()),
    ("Initech, also known as Initrode, merged with Umbrella Corporation.", ()),
    ("Bank of America was acquired by Procter & Gamble.", ()),
]  # fmt: skip


@pytest.fixture(scope="module")
def extraction():  # type: ignore[no-untyped-def]
    return extract(CORPUS)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Acme Corp", "ACME Corporation"),
        ("Acme Corp.", "acme"),
        ("The Acme Company", "Acme"),
        ("Procter & Gamble Co.", "procter and gamble"),
        ("Acme\u2019s", "Acme"),
        ("\uff27lobex", "globex"),  # NFKC: a full-width letter
    ],
)
def test_names_of_one_entity_normalise_alike(a: str, b: str) -> None:
    assert normalize_name(a) == normalize_name(b)


def test_normalisation_keeps_what_tells_names_apart() -> None:
    assert normalize_name("Acme Group") != normalize_name("Acme")
    assert normalize_name("Bank of America") == "bank of america"
    # A concept's noun phrase keeps its last word: a logistics company is not "logistics".
    assert normalize_name("logistics company", company_suffixes=False) == "logistics company"
    # A name that is only a suffix stays itself.
    assert normalize_name("Company") == "company"


def test_one_entity_per_name_with_its_aliases(extraction) -> None:  # type: ignore[no-untyped-def]
    acme = extraction.entities["acme"]
    # "Acme Corp", "ACME Corporation", "ACME" and "Acme" are one entity; its name is the first
    # spelling written, the others (one per spelling that differs by more than case) aliases.
    assert acme.name == "Acme Corp"
    assert acme.aliases == ["ACME", "ACME Corporation"]
    assert acme.type == ORGANIZATION
    # A declared alias joins names that normalise differently.
    ibm = extraction.entities["international business machines"]
    assert (ibm.name, ibm.aliases, ibm.keys) == (
        "International Business Machines",
        ["IBM"],
        {"ibm", "international business machines"},
    )
    initech = extraction.entities["initech"]
    assert (initech.name, initech.aliases) == ("Initech", ["Initrode"])
    assert "initrode" not in extraction.entities


def test_relations_with_their_passage_and_date(extraction) -> None:  # type: ignore[no-untyped-def]
    by_passage = [p.relations for p in extraction.passages]
    assert by_passage[0] == [
        ExtractedRelation("acme", "acquired", "globex", date(2024, 6, 1)),
        ExtractedRelation("globex", "is_a", "logistics company", None),
    ]
    assert by_passage[1] == [
        ExtractedRelation("acme", "located_in", "springfield", None),
        ExtractedRelation("hank scorpio", "ceo_of", "globex", None),
    ]
    assert by_passage[2] == []
    assert by_passage[3] == [
        ExtractedRelation(
            "jane smith", "works_at", "international business machines", date(2021, 1, 1)
        )
    ]
    assert by_passage[4] == [ExtractedRelation("initech", "merged_with", "umbrella", None)]
    # The passive reads object first.
    assert by_passage[5] == [
        ExtractedRelation("procter and gamble", "acquired", "bank of america", None)
    ]
    assert extraction.relation_count == 7


def test_types_come_from_names_and_relations(extraction) -> None:  # type: ignore[no-untyped-def]
    types = {k: e.type for k, e in extraction.entities.items()}
    assert types["hank scorpio"] == PERSON  # the subject of ceo_of
    assert types["jane smith"] == PERSON  # "Dr"
    assert types["springfield"] == PLACE  # the object of located_in
    assert types["globex"] == ORGANIZATION
    assert types["logistics company"] == CONCEPT
    assert types["umbrella"] == ORGANIZATION  # "Corporation"


def test_passages_name_their_mentions_and_skip_common_words(extraction) -> None:  # type: ignore[no-untyped-def]
    assert extraction.passages[0].mentions == {"acme", "globex", "logistics company"}
    # "Travel" and "Keep" start sentences and are never written capitalised elsewhere: not names;
    # "Acme" mid-sentence is one. The heading "Press release" is not a name either.
    assert extraction.passages[2].mentions == {"acme"}
    assert "travel" not in extraction.entities and "keep" not in extraction.entities
    assert "press release" not in extraction.entities


def test_a_sentence_initial_name_is_kept_when_the_document_confirms_it() -> None:
    alone = extract([("Globex ships parcels.", ())])
    assert alone.entities == {}
    confirmed = extract([("Globex ships parcels.", ()), ("We use Globex.", ())])
    assert set(confirmed.entities) == {"globex"}
    assert confirmed.passages[0].mentions == {"globex"}
    # Written in capitals, it needs no confirmation.
    assert set(extract([("IBM ships servers.", ())]).entities) == {"ibm"}


def test_name_runs() -> None:
    found = [m.name for m in mentions("The CEO of Bank of America met Jane Doe, Acme and Globex.")]
    assert found == ["Bank of America", "Jane Doe", "Acme", "Globex"]
    # Months, weekdays and role words never start or extend a name.
    assert [m.name for m in mentions("On Monday in March the CEO said so.")] == []
    # A possessive belongs to the sentence, not the name.
    assert [m.name for m in mentions("Acme's board met.")] == ["Acme"]


def test_extraction_is_deterministic() -> None:
    assert extract(CORPUS) == extract(CORPUS)
    assert extract([]).entities == {}


def test_query_keys_cover_every_run_of_words() -> None:
    keys = query_keys("Who leads the company Acme's board acquired?")
    assert "acme" in keys and "acme board" in keys
    assert "company" in keys  # a concept's name
    assert "the" not in keys and "who" not in keys
    assert len(query_keys("word " * 2_000)) <= 500


@pytest.mark.parametrize(
    ("sentence", "relation"),
    [
        ("Acme has bought Globex.", ("acme", "acquired", "globex")),
        ("Globex was purchased by Acme.", ("acme", "acquired", "globex")),
        ("Jane Doe works for Acme.", ("jane doe", "works_at", "acme")),
        ("Jane Doe is employed by Acme.", ("jane doe", "works_at", "acme")),
        ("Jane Doe recently joined Acme.", ("jane doe", "works_at", "acme")),
        ("Acme is based in Lisbon.", ("acme", "located_in", "lisbon")),
        ("Jane Doe founded Acme.", ("jane doe", "founded", "acme")),
        ("Acme was co-founded by Jane Doe.", ("jane doe", "founded", "acme")),
        ("Acme owns Globex.", ("acme", "owns", "globex")),
        ("Globex is owned by Acme.", ("acme", "owns", "globex")),
        ("Globex is a subsidiary of Acme.", ("globex", "subsidiary_of", "acme")),
        ("Acme partnered with Globex.", ("acme", "partner_of", "globex")),
        ("Acme merged with Globex.", ("acme", "merged_with", "globex")),
        ("Acme invested in Globex.", ("acme", "invested_in", "globex")),
        ("Acme supplies Globex.", ("acme", "supplies", "globex")),
        ("Jane Doe reports to John Roe.", ("jane doe", "reports_to", "john roe")),
        ("Jane Doe heads Acme.", ("jane doe", "leads", "acme")),
        ("Acme is led by Jane Doe.", ("jane doe", "leads", "acme")),
        ("Acme competes with Globex.", ("acme", "competes_with", "globex")),
        ("Jane Doe, CTO of Acme, spoke.", ("jane doe", "cto_of", "acme")),
        ("Jane Doe became chief executive of Acme.", ("jane doe", "ceo_of", "acme")),
        ("Jane Doe is the co-founder of Acme.", ("jane doe", "founder_of", "acme")),
        ("Jane Doe was named President of Acme.", ("jane doe", "president_of", "acme")),
        ("Jane Doe is the chairwoman of Acme.", ("jane doe", "chair_of", "acme")),
        ("Acme is an insurance company.", ("acme", "is_a", "insurance company")),
    ],
)
def test_each_relation_pattern(sentence: str, relation: tuple[str, str, str]) -> None:
    [read] = extract([(sentence, ())]).passages[0].relations
    assert (read.subject, read.predicate, read.object) == relation


@pytest.mark.parametrize(
    "sentence",
    [
        "Acme sued Globex.",  # not a listed verb phrase
        "Acme, unlike its rival, acquired Globex.",  # other words between the names
        "Acme acquired it. Globex was sold.",  # a fact over two sentences
        "acme acquired globex.",  # names in lower case
    ],
)
def test_what_the_rules_do_not_read(sentence: str) -> None:
    assert extract([(sentence, ())]).relation_count == 0


def test_dates_give_valid_from() -> None:
    [on] = extract([("Acme acquired Globex on 3 May 2025.", ())]).passages[0].relations
    assert on.valid_from == date(2025, 5, 3)
    [since] = extract([("Jane Doe works at Acme since 2019.", ())]).passages[0].relations
    assert since.valid_from == date(2019, 1, 1)

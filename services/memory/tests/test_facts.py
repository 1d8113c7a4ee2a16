"""Fact rules, as pure functions: what a message states, and how a new fact meets current ones."""

from __future__ import annotations

from uuid import UUID

import pytest
from edrs_memory.facts import CurrentFact, Resolution, extract, resolve


def stated(text: str) -> list[tuple[str, str]]:
    return [(f.attribute, f.value) for f in extract(text)]


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        ("My manager is Priya.", [("manager", "Priya")]),
        ("Actually, my manager is now Omar!", [("manager", "Omar")]),
        ("I report to Omar, who joined in May", [("manager", "Omar")]),
        ("My name is Sam", [("name", "Sam")]),
        ("call me Sammy please", [("name", "Sammy")]),
        ("I work at Acme Corp now.", [("employer", "Acme Corp")]),
        ("I work for the city council", [("employer", "the city council")]),
        ("I work as a nurse", [("job_title", "nurse")]),
        ("I'm a software engineer at Acme", [("job_title", "software engineer")]),
        ("I live in Lisbon", [("location", "Lisbon")]),
        ("I'm based in Berlin.", [("location", "Berlin")]),
        ("My timezone is Europe/Lisbon", [("timezone", "Europe/Lisbon")]),
        ("I prefer bullet points.", [("preference", "bullet points")]),
        ("I really love hiking in the Alps", [("like", "hiking in the Alps")]),
        ("I enjoy jazz", [("like", "jazz")]),
        ("I hate long meetings", [("dislike", "long meetings")]),
        ("I don't like cold coffee", [("dislike", "cold coffee")]),
        ("I dislike spam", [("dislike", "spam")]),
    ],
)
def test_each_rule_reads_its_fact(text: str, facts: list[tuple[str, str]]) -> None:
    assert stated(text) == facts


def test_rules_ignore_case() -> None:
    assert stated("MY MANAGER IS PRIYA") == [("manager", "PRIYA")]


def test_one_message_can_state_several_facts() -> None:
    assert stated("Hi! My manager is Priya and I live in Lisbon. I prefer short answers") == [
        ("manager", "Priya"),
        ("location", "Lisbon"),
        ("preference", "short answers"),
    ]


def test_a_comma_before_a_new_statement_about_the_user_splits_it() -> None:
    assert stated("Call me Sam, I work at Acme.") == [("name", "Sam"), ("employer", "Acme")]
    # A comma inside a value's relative clause does not.
    assert stated("My manager is Priya, who joined in May.") == [("manager", "Priya")]


def test_and_inside_a_value_does_not_split_it() -> None:
    assert stated("I like tea and cake, and I hate meetings") == [
        ("like", "tea and cake"),
        ("dislike", "meetings"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Is my manager Priya?",
        "I'm a big fan of tea",  # "I'm a(n) X" counts only for job words
        "my name is not Bob",
        "I'd like to book a meeting",
        "What's the weather like?",
        "",
    ],
)
def test_questions_negations_and_small_talk_state_nothing(text: str) -> None:
    assert stated(text) == []


def test_a_fact_stated_twice_in_one_message_counts_once() -> None:
    assert stated("I like tea. I like TEA!") == [("like", "tea")]


def test_the_statement_is_the_clause_the_fact_came_from() -> None:
    [fact] = extract("Hello there. My manager is Priya, who is great.")
    assert fact.statement == "My manager is Priya, who is great."


A, B, C = UUID(int=1), UUID(int=2), UUID(int=3)


def test_single_valued_different_value_supersedes_the_current_one() -> None:
    current = [CurrentFact(id=A, attribute="manager", value="Priya")]
    assert resolve(current, "manager", "Omar") == Resolution(add=True, supersede=(A,))


def test_single_valued_same_value_is_a_no_op_whatever_the_case() -> None:
    current = [CurrentFact(id=A, attribute="manager", value="Priya")]
    assert resolve(current, "manager", " priya ") == Resolution(add=False)


def test_multi_valued_adds_beside_the_current_values() -> None:
    current = [CurrentFact(id=A, attribute="like", value="tea")]
    assert resolve(current, "like", "jazz") == Resolution(add=True)
    assert resolve(current, "like", "Tea") == Resolution(add=False)


def test_like_supersedes_a_dislike_of_the_same_thing_and_back() -> None:
    current = [
        CurrentFact(id=A, attribute="dislike", value="jazz"),
        CurrentFact(id=B, attribute="dislike", value="spam"),
    ]
    assert resolve(current, "like", "Jazz") == Resolution(add=True, supersede=(A,))
    assert resolve([CurrentFact(id=C, attribute="like", value="jazz")], "dislike", "jazz") == (
        Resolution(add=True, supersede=(C,))
    )


def test_an_asserted_unknown_attribute_is_multi_valued() -> None:
    current = [CurrentFact(id=A, attribute="pet", value="cat")]
    assert resolve(current, "pet", "dog") == Resolution(add=True)

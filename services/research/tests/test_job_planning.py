"""Planning and extractive synthesis of research jobs (pure functions, no engines)."""

from __future__ import annotations

import json

import pytest
from edrs_research.jobs import planning, synthesis
from edrs_research.jobs.synthesis import Passage

QUESTION = "When did the Orion probe launch, where does it travel and what propels it?"


def test_the_fallback_plan_searches_the_question_and_its_keywords() -> None:
    [step] = planning.fallback_plan(QUESTION, depth=1)
    assert step.sub_question == QUESTION
    assert step.queries == (QUESTION, "orion probe launch travel propels")


def test_deeper_fallback_plans_add_one_step_per_part_of_the_question() -> None:
    steps = planning.fallback_plan(QUESTION, depth=2)
    assert [s.sub_question for s in steps] == [
        QUESTION,
        "When did the Orion probe launch",
        "where does it travel",
        "what propels it",
    ]
    assert steps[2].queries == ("orion probe travel",)
    assert len(steps) <= planning.max_steps(2)


def test_a_valid_model_plan_is_kept_and_anchored_on_the_question() -> None:
    raw = json.dumps(
        {
            "steps": [
                {"sub_question": "When did Orion launch?", "queries": ["Orion launch date"]},
                {
                    "sub_question": "What propels Orion?",
                    "queries": ["Orion engine", "Orion engine"],
                },
            ]
        }
    )
    steps = planning.validate_plan(raw, QUESTION, depth=1)
    assert steps[0].queries == (QUESTION, "Orion launch date")
    assert steps[1].queries == ("Orion engine",)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("not json", "not JSON"),
        ("[]", "no steps list"),
        ('{"steps": []}', "no steps"),
        ('{"steps": [{"sub_question": "x", "queries": ["orion"]}]}', "sub_question must be"),
        ('{"steps": [{"sub_question": "About Orion", "queries": []}]}', "no queries"),
        ('{"steps": [{"sub_question": "About Orion", "queries": [" "]}]}', "an empty query"),
        (
            '{"steps": [{"sub_question": "About Orion", "queries": ["cheap flights to Paris"]}]}',
            "off the question's topic",
        ),
    ],
)
def test_an_invalid_model_plan_is_rejected_saying_why(raw: str, why: str) -> None:
    with pytest.raises(planning.PlanRejected, match=why):
        planning.validate_plan(raw, QUESTION, depth=1)


def _passage(key: str, text: str, credibility: float = 0.9, document: str = "") -> Passage:
    return Passage(
        key=key,
        document_id=document or f"doc-{key}",
        version=1,
        start=0,
        end=len(text),
        text=text,
        content_hash="h",
        title=key,
        url=f"kb://{key}",
        score=1.0,
        credibility=credibility,
    )


def test_claims_are_sentences_of_the_passages_that_touch_the_question() -> None:
    a = _passage("a", "Mission history. The Orion probe launched in 2031 from Kourou. It rained.")
    b = _passage("b", "The bakery opens at seven. Croissants are baked twice a day.")
    plan = [{"sub_question": QUESTION, "queries": [QUESTION]}]
    [section] = synthesis.draft(QUESTION, plan, {QUESTION: [a, b]}, claims_per_section=5)
    assert [c.text for c in section.claims] == ["The Orion probe launched in 2031 from Kourou."]
    assert all(c.text in a.text for c in section.claims)


def test_a_less_credible_contradicting_claim_is_flagged_not_stated() -> None:
    good = _passage("good", "The Orion probe launched in 2031 from Kourou.", 0.9)
    also = _passage("also", "Records show the Orion probe launched in 2031.", 0.8)
    bad = _passage("bad", "The Orion probe launched in 2029 from Kourou.", 0.3)
    plan = [{"sub_question": QUESTION, "queries": [QUESTION]}]
    passages = {p.key: p for p in (good, also, bad)}
    [section] = synthesis.draft(QUESTION, plan, {QUESTION: [bad, good, also]}, claims_per_section=5)
    synthesis.weigh([section], passages, min_credibility=0.2)
    by_text = {c.text: c for c in section.claims}
    assert by_text[good.text].supported and by_text[also.text].supported
    flagged = by_text[bad.text]
    assert not flagged.supported
    assert flagged.note.startswith("contradicted by a more credible source {")


def test_a_claim_from_a_source_below_the_minimum_credibility_is_flagged() -> None:
    weak = _passage("weak", "The Orion probe launched in 2031 from Kourou.", 0.1)
    plan = [{"sub_question": QUESTION, "queries": [QUESTION]}]
    [section] = synthesis.draft(QUESTION, plan, {QUESTION: [weak]}, claims_per_section=5)
    synthesis.weigh([section], {"weak": weak}, min_credibility=0.35)
    [claim] = section.claims
    assert not claim.supported and "below 0.35" in claim.note


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("The probe launched in 2031.", "The probe launched in 2029.", True),
        ("It launched from Kourou in May.", "It launched from Baikonur in May.", True),
        ("It launched in 2031.", "It launched in 2031 from Kourou.", False),
        ("It launched in 2031.", "It launched in 2031.", False),
    ],
)
def test_contradiction_is_a_different_number_or_name_not_a_missing_one(
    a: str, b: str, expected: bool
) -> None:
    assert synthesis.contradict(a, b) is expected

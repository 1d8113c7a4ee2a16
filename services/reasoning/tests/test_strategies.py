"""The pure parts of the reasoning strategies: answer extraction, voting, claim checks."""

from __future__ import annotations

import pytest
from edrs_reasoning import strategies
from edrs_reasoning.backends.base import Message


def test_chain_of_thought_instruction_joins_the_last_user_message() -> None:
    messages = [Message("system", "Be brief."), Message("user", "What is 2+2?")]
    out = strategies.with_chain_of_thought(messages)
    assert out[0] == messages[0]
    assert out[1].role == "user"
    assert out[1].content.startswith("What is 2+2?")
    assert "Answer:" in out[1].content


def test_prompt_renders_one_message_per_line() -> None:
    prompt = strategies.render_prompt(
        [Message("system", "S"), Message("user", "my manager is Priya")]
    )
    assert prompt == "system: S\nuser: my manager is Priya"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("2 plus 2 is 4.\nAnswer: 4", "4"),
        ("First, think.\nanswer - Paris\nWait.\n**Final Answer:** Lyon", "Lyon"),
        ("Step 1: add.\n  Answer:   four  ", "four"),
        ("no answer line here", "no answer line here"),
        ("  The answer is obviously 7  ", "The answer is obviously 7"),
    ],
)
def test_extract_answer_reads_the_last_answer_line(text: str, answer: str) -> None:
    assert strategies.extract_answer(text) == answer


def test_normalise_ignores_case_space_and_punctuation() -> None:
    assert strategies.normalise_answer("  Paris.  ") == strategies.normalise_answer("paris")
    assert strategies.normalise_answer("New   York!") == "new york"
    assert strategies.normalise_answer("4") != strategies.normalise_answer("5")


def test_majority_vote_picks_the_most_frequent_answer() -> None:
    vote = strategies.majority_vote(["5", "Paris", "paris.", " PARIS", "Lyon"])
    assert vote.winner == 1
    assert vote.confidence == pytest.approx(0.6)


def test_majority_vote_tie_goes_to_the_earliest_answer() -> None:
    vote = strategies.majority_vote(["b", "a", "a", "b"])
    assert vote.winner == 0
    assert vote.confidence == pytest.approx(0.5)


def test_split_claims_reads_sentences_and_bullets() -> None:
    draft = "Priya manages the team. She joined in 2021!\n- Omar runs sales\n2) Budget is 5k"
    assert strategies.split_claims(draft) == [
        "Priya manages the team.",
        "She joined in 2021!",
        "Omar runs sales",
        "Budget is 5k",
    ]


def test_a_paraphrase_with_shared_words_is_supported() -> None:
    assert strategies.supports("The user prefers bullet points.", "I prefer bullet points", 0.8)


def test_a_different_name_is_not_supported_however_similar() -> None:
    # MiniLM puts these two close; the name settles it.
    assert not strategies.supports("My manager is Omar.", "My manager is Priya", 0.9)


def test_a_different_number_is_not_supported() -> None:
    assert not strategies.supports("The budget is 5000 euros.", "The budget is 3000 euros", 0.95)


def test_low_similarity_is_not_supported_even_with_shared_words() -> None:
    assert not strategies.supports("bullet points", "bullet points", 0.2)


def test_verify_reports_the_unsupported_claims_and_the_supported_share() -> None:
    claims = ["Priya is my manager.", "I live on Mars."]
    facts = ["My manager is Priya"]
    result = strategies.verify_claims(claims, facts, [[0.9], [0.1]])
    assert result.unsupported == ["I live on Mars."]
    assert result.confidence == pytest.approx(0.5)
    assert result.verdict.startswith("partly supported")


def test_verify_without_facts_supports_nothing() -> None:
    result = strategies.verify_claims(["The sky is green."], [], [[]])
    assert result.unsupported == ["The sky is green."]
    assert result.confidence == 0

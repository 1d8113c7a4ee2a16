"""Which messages ask a persona to research something (edrs_persona.research)."""

from __future__ import annotations

import pytest
from edrs_persona.research import research_question


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("Research: what propels the Orion probe?", "what propels the Orion probe?"),
        ("research what propels the Orion probe", "what propels the Orion probe"),
        ("  Please research:  the Orion launch date ", "the Orion launch date"),
        ("Can you research the Orion probe?", "the Orion probe?"),
        ("RESEARCH:\nOrion engines", "Orion engines"),
    ],
)
def test_an_explicit_request_gives_its_question(text: str, question: str) -> None:
    assert research_question(text) == question


@pytest.mark.parametrize(
    "text",
    [
        "What did the research team find?",
        "I did some research yesterday.",
        "researchers say the probe is fast",
        "Research: ab",
        "Research:",
        "research: " + "q" * 2001,
    ],
)
def test_anything_else_is_not_a_request(text: str) -> None:
    assert research_question(text) is None

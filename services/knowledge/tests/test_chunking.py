"""Structure-aware chunking: budgets, overlap, boundaries, provenance, determinism."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from edrs_knowledge.chunking import (
    ApproximateCounter,
    Chunk,
    Chunker,
    WordPieceCounter,
    default_token_counter,
)
from edrs_knowledge.parsing import BlockKind, ParsedDocument, parse_document


def check_provenance(document: ParsedDocument, chunks: list[Chunk]) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert document.text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip()
        assert chunk.content_hash == hashlib.sha256(chunk.text.encode()).hexdigest()
        # A passage sits under one heading path and on one page: the blocks it overlaps agree.
        inside = [b for b in document.blocks if b.start < chunk.end and chunk.start < b.end]
        assert inside
        assert {b.page for b in inside} == {chunk.page}
        assert {b.heading_path for b in inside if b.kind is not BlockKind.HEADING} <= {
            chunk.heading_path
        }


def test_the_model_tokenizer_counts_when_installed() -> None:
    counter = default_token_counter()
    assert isinstance(counter, WordPieceCounter)
    # WordPiece splits a rare word into pieces; spans map each piece back to characters.
    text = "Reimbursement for hotels"
    spans = counter.spans(text)
    assert len(spans) > 3
    assert text[spans[0][0] : spans[-1][1]] == text


def test_a_sentence_on_page_three_is_cited_with_page_three(documents) -> None:
    document = parse_document(documents.pdf(), filename="policy.pdf")
    sentence = documents.page_three_sentence
    for chunker in (Chunker(), Chunker(max_tokens=24, overlap=8)):
        chunks = chunker.chunk(document)
        check_provenance(document, chunks)
        [chunk] = [c for c in chunks if sentence in c.text][:1]
        assert chunk.page == 3
        assert chunk.heading_path == ("Hotels",)
        at = document.text.index(sentence)
        assert chunk.start <= at and at + len(sentence) <= chunk.end
        assert document.text[chunk.start : chunk.end] == chunk.text


@pytest.mark.parametrize("counter", [default_token_counter(), ApproximateCounter()])
@pytest.mark.parametrize("budget", [24, 64, 254])
def test_every_format_stays_within_the_budget(documents, counter, budget) -> None:
    sources = {
        "policy.pdf": documents.pdf(),
        "handbook.docx": documents.docx(),
        "expenses.html": documents.html.encode(),
        "runbook.md": documents.markdown.encode(),
    }
    chunker = Chunker(counter, max_tokens=budget, overlap=budget // 4)
    for name, data in sources.items():
        document = parse_document(data, filename=name)
        chunks = chunker.chunk(document)
        check_provenance(document, chunks)
        assert all(0 < c.token_count <= budget for c in chunks), name
        # Nothing of the text is lost: every block's text lies inside some passage.
        for block in document.blocks:
            covered = [c for c in chunks if c.start < block.end and block.start < c.end]
            assert min(c.start for c in covered) <= block.start, (name, block.text)
            assert max(c.end for c in covered) >= block.end, (name, block.text)


def test_whole_paragraphs_first_then_sentences_with_overlap() -> None:
    sentences = [f"Rule {n} applies to every contract signed in region {n}." for n in range(30)]
    markdown = "# Contracts\n\nShort opening paragraph.\n\n" + " ".join(sentences) + "\n"
    document = parse_document(markdown.encode(), filename="contracts.md")
    counter = default_token_counter()
    chunks = Chunker(counter, max_tokens=60, overlap=16).chunk(document)
    check_provenance(document, chunks)
    # The heading and the short paragraph fit whole, and travel with the long paragraph's start.
    assert chunks[0].text.startswith("Contracts\n\nShort opening paragraph.\n\nRule 0 applies")
    # The long paragraph is cut between sentences, never inside one.
    for chunk in chunks[1:]:
        assert chunk.text.startswith("Rule ") and chunk.text.endswith(".")
    # Consecutive passages share whole sentences, at most `overlap` tokens of them.
    for previous, chunk in itertools.pairwise(chunks):
        assert chunk.start < previous.end
        shared = document.text[chunk.start : previous.end]
        assert shared.startswith("Rule ") and shared.endswith(".")
        assert shared in " ".join(sentences)
        assert len(counter.spans(shared)) <= 16
    assert chunks[-1].text.endswith(sentences[-1])


def test_headings_and_pages_are_boundaries(documents) -> None:
    document = parse_document(documents.docx(), filename="handbook.docx")
    chunks = Chunker(max_tokens=254).chunk(document)
    check_provenance(document, chunks)
    paths = [c.heading_path for c in chunks]
    assert ("Onboarding handbook", "Equipment", "Security keys") in paths
    [keys] = [c for c in chunks if "hardware security keys" in c.text]
    assert keys.text.startswith("Security keys\n\nEvery engineer")
    assert "Benefits" not in keys.text
    assert keys.embedding_text.startswith(
        "Onboarding handbook > Equipment > Security keys\n\nSecurity keys"
    )
    pdf = parse_document(documents.pdf(), filename="policy.pdf")
    assert [c.page for c in Chunker().chunk(pdf)] == [1, 2, 3]


def test_a_sentence_longer_than_the_budget_is_cut_at_word_starts() -> None:
    words = [f"clause{n}" for n in range(400)]
    document = parse_document((" ".join(words) + ".").encode(), filename="long.txt")
    counter = default_token_counter()
    chunks = Chunker(counter, max_tokens=50, overlap=0).chunk(document)
    check_provenance(document, chunks)
    assert len(chunks) > 10
    assert all(c.token_count <= 50 for c in chunks)
    for chunk in chunks:
        assert chunk.text.split()[0] in words  # starts at a word, not inside one
    joined = " ".join(c.text for c in chunks)
    assert joined == document.text


def test_the_same_text_gives_the_same_chunks_and_a_change_touches_only_its_section(
    documents,
) -> None:
    chunker = Chunker(max_tokens=40, overlap=10)
    before = chunker.chunk(parse_document(documents.markdown.encode(), filename="r.md"))
    again = chunker.chunk(parse_document(documents.markdown.encode(), filename="r.md"))
    assert before == again
    changed_text = documents.markdown.replace("latest snapshot", "newest verified snapshot")
    after = chunker.chunk(parse_document(changed_text.encode(), filename="r.md"))
    unchanged = {c.content_hash for c in before} & {c.content_hash for c in after}
    new = [c for c in after if c.content_hash not in unchanged]
    assert new and all(c.heading_path == ("Runbook", "Recovery", "Databases") for c in new)
    assert len(unchanged) == len(before) - len(new)


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens must be at least 8"):
        Chunker(max_tokens=4)
    with pytest.raises(ValueError, match="overlap must be between 0 and max_tokens / 2"):
        Chunker(max_tokens=100, overlap=60)

"""Citations of a reply: every source given to the model, numbered, and whether the reply cites it."""

from __future__ import annotations

from uuid import uuid4

from edrs_persona.citations import citations, cited_markers
from edrs_persona.prompt import Source


def source(title: str, **fields: object) -> Source:
    values: dict[str, object] = {
        "chunk_id": str(uuid4()),
        "document_id": str(uuid4()),
        "external_id": "",
        "collection_id": str(uuid4()),
        "title": title,
        "text": f"text of {title}",
        "score": 0.5,
    }
    values.update(fields)
    return Source(**values)  # type: ignore[arg-type]


def test_markers_are_read_in_the_forms_models_write_them() -> None:
    assert cited_markers("The code is 7391 [1].") == {1}
    assert cited_markers("See [2][3] and [1, 4].") == {1, 2, 3, 4}
    assert cited_markers("No sources, [a] or [ ] or 1].") == set()


def test_every_source_is_a_citation_in_marker_order() -> None:
    handbook = source(
        "Handbook",
        external_id="hb-1",
        page=3,
        heading_path=("Security", "Vaults"),
        start=10,
        end=42,
    )
    menu = source("Menu")
    found = citations([handbook, menu], "The vault code is 7391 [1].")
    assert [(c.marker, c.title, c.cited) for c in found] == [
        (1, "Handbook", True),
        (2, "Menu", False),
    ]
    first = found[0]
    assert first.document_id == handbook.document_id and first.external_id == "hb-1"
    assert first.page == 3 and list(first.heading_path) == ["Security", "Vaults"]
    assert (first.start_offset, first.end_offset) == (10, 42)
    assert first.text == "text of Handbook" and first.chunk_id == handbook.chunk_id
    assert citations([], "anything [1]") == []

"""Parsing by content: every format into one normalised text with exact block offsets."""

from __future__ import annotations

import pytest
from edrs_knowledge.parsing import (
    BlockKind,
    CorruptDocument,
    DocumentTooLarge,
    EmptyDocument,
    EncryptedDocument,
    Format,
    FormatMismatch,
    ParsedDocument,
    UnsupportedFormat,
    parse_document,
)


def assert_offsets_exact(document: ParsedDocument) -> None:
    for block in document.blocks:
        assert document.text[block.start : block.end] == block.text
    starts = [b.start for b in document.blocks]
    assert starts == sorted(starts)


def test_pdf_pages_headings_and_paragraphs(documents) -> None:
    document = parse_document(documents.pdf(), filename="policy.pdf")
    assert document.format is Format.PDF
    assert document.pages == 3
    assert document.title == "Acme travel policy"
    assert_offsets_exact(document)
    headings = [(b.text, b.page) for b in document.blocks if b.kind is BlockKind.HEADING]
    assert headings == [("Travel policy", 1), ("Flights", 2), ("Hotels", 3)]
    sentence = documents.page_three_sentence
    [block] = [b for b in document.blocks if sentence in b.text]
    assert block.kind is BlockKind.PARAGRAPH
    assert block.page == 3
    assert block.heading_path == ("Hotels",)
    start = document.text.index(sentence)
    assert block.start <= start and start + len(sentence) <= block.end
    # Paragraph breaks come from the gaps between lines: two paragraphs on page 1, not one.
    page_one = [b for b in document.blocks if b.page == 1 and b.kind is BlockKind.PARAGRAPH]
    assert [b.text for b in page_one][1] == "Trains are preferred under 600 km."
    # A paragraph's wrapped lines are joined by one space.
    assert "  " not in document.text and "\r" not in document.text


def test_pdf_encrypted_corrupt_or_without_text_is_refused_with_its_reason(documents) -> None:
    with pytest.raises(EncryptedDocument, match="encrypted with a password") as encrypted:
        parse_document(documents.pdf(password="s3cret"), filename="locked.pdf")
    assert encrypted.value.code == "encrypted"

    whole = documents.pdf()
    with pytest.raises(CorruptDocument, match="the PDF cannot be read") as corrupt:
        parse_document(whole[: len(whole) // 3], filename="cut.pdf")
    assert corrupt.value.code == "corrupt"
    with pytest.raises(CorruptDocument):
        parse_document(b"%PDF-1.7\n" + b"\x00garbage" * 100, filename="junk.pdf")

    with pytest.raises(EmptyDocument, match="no text layer on any of its 2 pages") as empty:
        parse_document(documents.pdf([[], []]), filename="scan.pdf")
    assert empty.value.code == "empty"


def test_docx_headings_lists_and_tables(documents) -> None:
    document = parse_document(documents.docx(), filename="handbook.docx")
    assert document.format is Format.DOCX
    assert document.title == "Onboarding handbook"
    assert document.pages is None
    assert_offsets_exact(document)
    [keys] = [b for b in document.blocks if b.text.startswith("Every engineer")]
    assert keys.heading_path == ("Onboarding handbook", "Equipment", "Security keys")
    [items] = [b for b in document.blocks if b.kind is BlockKind.LIST]
    assert items.text == "- Register both keys.\n- Keep one at home."
    [table] = [b for b in document.blocks if b.kind is BlockKind.TABLE]
    assert table.text == "Item | Owner\nLaptop | IT desk"
    # A heading of the same level closes the previous one's subtree.
    [benefits] = [b for b in document.blocks if b.text.startswith("Health insurance")]
    assert benefits.heading_path == ("Onboarding handbook", "Benefits")


def test_docx_corrupt_or_encrypted_is_refused(documents) -> None:
    with pytest.raises(CorruptDocument, match="the DOCX cannot be read"):
        parse_document(documents.corrupt_docx(), filename="broken.docx")
    with pytest.raises(EncryptedDocument, match="encrypted Office document"):
        parse_document(documents.encrypted_office_file(), filename="locked.docx")


def test_html_main_content_without_boilerplate(documents) -> None:
    document = parse_document(documents.html.encode(), filename="expenses.html")
    assert document.format is Format.HTML
    assert document.title == "Expense rules | Acme intranet"
    assert_offsets_exact(document)
    assert "Client dinners are reimbursed up to 80 euros" in document.text
    for boilerplate in ("Careers", "internal use only", "All rights reserved"):
        assert boilerplate not in document.text
    [dinners] = [b for b in document.blocks if b.text.startswith("Client dinners")]
    assert dinners.heading_path == ("Expense rules", "Meals")
    kinds = {b.kind for b in document.blocks}
    assert {BlockKind.HEADING, BlockKind.PARAGRAPH, BlockKind.LIST, BlockKind.TABLE} <= kinds
    [table] = [b for b in document.blocks if b.kind is BlockKind.TABLE]
    assert table.text.splitlines()[1] == "Portugal | 45"


def test_markdown_heading_structure(documents) -> None:
    document = parse_document(documents.markdown.encode(), filename="runbook.md")
    assert document.format is Format.MARKDOWN
    assert document.title == "Runbook"
    assert_offsets_exact(document)
    [restore] = [b for b in document.blocks if b.text.startswith("Restore from")]
    assert restore.heading_path == ("Runbook", "Recovery", "Databases")
    [paging] = [b for b in document.blocks if b.text.startswith("Pages go")]
    # Inline markup is gone from the text; its words stay.
    assert paging.text.endswith("after five minutes.")
    [items] = [b for b in document.blocks if b.kind is BlockKind.LIST]
    assert items.text == (
        "- Acknowledge within 5 minutes.\n- Open an incident channel.\n  - Name it after the date."
    )
    [code] = [b for b in document.blocks if b.kind is BlockKind.CODE]
    assert code.text == "pg_restore --clean latest.dump"


def test_plain_text_paragraphs_and_encodings() -> None:
    text = "First paragraph\nwraps here.\n\n\n  Second   paragraph.\r\n\r\nThird: café ﬁne.\n"
    document = parse_document(text.encode(), filename="notes.txt")
    assert document.format is Format.TEXT
    assert [b.text for b in document.blocks] == [
        "First paragraph wraps here.",
        "Second paragraph.",
        "Third: café ﬁne.",
    ]
    assert document.text == "First paragraph wraps here.\n\nSecond paragraph.\n\nThird: café ﬁne."
    # UTF-16 with its byte-order mark and Latin-1 come out as the same text.
    assert parse_document(b"\xff\xfe" + "café au lait".encode("utf-16-le")).text == "café au lait"
    latin = "Un café très noir, s'il vous plaît, et une crème brûlée.".encode("latin-1")
    assert "très" in parse_document(latin, content_type="text/plain").text
    quoted = "\u201cSmart quotes\u201d \u2013 and a dash".encode("cp1252")
    assert parse_document(quoted).text == "\u201cSmart quotes\u201d \u2013 and a dash"


def test_content_decides_when_nothing_is_declared(documents) -> None:
    assert parse_document(documents.pdf()).format is Format.PDF
    assert parse_document(documents.docx()).format is Format.DOCX
    assert parse_document(documents.html.encode()).format is Format.HTML
    assert parse_document(documents.markdown.encode()).format is Format.MARKDOWN
    assert parse_document(documents.markdown.encode(), content_type="text/plain").format is (
        Format.TEXT
    )


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("pdf", "report.docx", "the content is a PDF document but report.docx says docx"),
        ("docx", "report.pdf", "the content is a DOCX document but report.pdf says pdf"),
        ("text", "report.pdf", "report.pdf says PDF but the content is not a PDF document"),
        ("text", "report.docx", "report.docx says DOCX but the content is not a DOCX"),
        ("pdf", "notes.md", "the content is a PDF document but notes.md says markdown"),
        ("html", "notes.txt", "the content is an HTML document but notes.txt says text"),
        ("text", "page.html", "page.html says HTML but the content has no HTML markup"),
    ],
)
def test_a_name_that_lies_about_the_content_is_refused(documents, content, name, message) -> None:
    data = {
        "pdf": documents.pdf(),
        "docx": documents.docx(),
        "html": documents.html.encode(),
        "text": b"Just a few words of plain text.",
    }[content]
    with pytest.raises(FormatMismatch, match=message) as refused:
        parse_document(data, filename=name)
    assert refused.value.code == "format_mismatch"


def test_a_content_type_that_lies_is_refused(documents) -> None:
    with pytest.raises(
        FormatMismatch, match="content type application/pdf says PDF but the content is not a PDF"
    ):
        parse_document(b"plain words", content_type="application/pdf; charset=binary")
    with pytest.raises(
        FormatMismatch, match="the content is a PDF document but content type text/html says html"
    ):
        parse_document(documents.pdf(), content_type="text/html")


def test_unsupported_empty_and_oversized_documents() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    with pytest.raises(UnsupportedFormat, match="the content is a PNG image"):
        parse_document(png, filename="photo.png.pdf")
    with pytest.raises(UnsupportedFormat, match=r"file type '\.xlsx'"):
        parse_document(b"a,b", filename="sheet.xlsx")
    with pytest.raises(UnsupportedFormat, match="content type 'image/png' is not supported"):
        parse_document(b"text", content_type="image/png")
    with pytest.raises(UnsupportedFormat, match="binary data"):
        parse_document(b"abc\x00def" * 10)
    with pytest.raises(EmptyDocument, match="the document is empty"):
        parse_document(b"", filename="empty.txt")
    with pytest.raises(EmptyDocument):
        parse_document(b" \n\t\n ", filename="blank.md")
    with pytest.raises(EmptyDocument, match="has no text"):
        parse_document(b"<html><body><nav></nav></body></html>", filename="x.html")
    with pytest.raises(DocumentTooLarge, match="the document is 2,048 bytes; the limit is 1,024"):
        parse_document(b"a" * 2048, max_bytes=1024)

"""Report export (unit): Markdown, HTML and PDF of a report built here, read back and checked for
what a reader needs (sections, numbered citations linked to the sources, flagged claims marked,
sources with credibility and reasons) and for what a hostile page must not do (inject HTML,
Markdown links, or crash the PDF with text outside Latin-1)."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pypdfium2
import pytest
from edrs_core.protobuf import timestamp
from edrs_proto.research.v1 import research_pb2
from edrs_research import export

JOB = "0190d6a0-0000-7000-8000-0000000000a1"
HOSTILE = '<script>alert("x")</script> [click](javascript:alert(1)) <img src=x onerror=y>'


def report(*, title: str = "Tides and the Moon", extra_text: str = "") -> research_pb2.Report:
    return research_pb2.Report(
        job_id=JOB,
        question="Why are there two high tides a day?",
        title=title,
        summary="The Moon's gravity raises two bulges of water [1], on opposite sides [2].",
        sections=[
            research_pb2.ReportSection(
                heading="Gravity and the bulges",
                text="The near side is pulled more strongly than the Earth's centre [1]. "
                "The far side is pulled less [2]. Tides are caused by wind (unverified)."
                + extra_text,
                claims=[
                    research_pb2.ReportClaim(
                        text="The near side is pulled more strongly than the Earth's centre",
                        citations=[1],
                        supported=True,
                        support=0.91,
                    ),
                    research_pb2.ReportClaim(
                        text="Tides are caused by wind",
                        citations=[3],
                        supported=False,
                        support=0.12,
                        note="contradicted by a more credible source [1]",
                    ),
                ],
            ),
            research_pb2.ReportSection(heading="Москва и Αθήνα", text="Приливы — Παλίρροια [2]."),
        ],
        citations=[
            research_pb2.ReportCitation(
                number=1,
                source_id="s1",
                url="https://oceans.example.org/tides",
                title="How tides work",
                passage="The gravitational pull of the Moon is strongest on the near side.",
            ),
            research_pb2.ReportCitation(
                number=2,
                source_id="s2",
                url="https://physics.example.edu/bulge?a=1&b=(2)",
                title="The far-side bulge",
                passage="The far side feels a weaker pull, leaving a second bulge.",
            ),
        ],
        sources=[
            research_pb2.ReportSource(
                source_id="s1",
                url="https://oceans.example.org/tides",
                title="How tides work",
                credibility=0.82,
                cited=True,
                reasons=[
                    research_pb2.CredibilityReason(
                        signal="domain_tier", weight=0.25, detail="tier 'reference'"
                    ),
                    research_pb2.CredibilityReason(
                        signal="author", weight=-0.05, detail="no author found"
                    ),
                ],
            ),
            research_pb2.ReportSource(
                source_id="s3",
                url="javascript:alert(1)",
                title="Windy blog",
                credibility=0.21,
                cited=False,
                reasons=[
                    research_pb2.CredibilityReason(signal="https", weight=-0.1, detail="plain http")
                ],
            ),
        ],
        create_time=timestamp(datetime(2026, 12, 7, 3, 0, tzinfo=UTC)),
    )


def test_formats_have_their_content_type_and_file_name() -> None:
    r = report()
    for fmt, (ctype, ext) in {
        research_pb2.REPORT_FORMAT_UNSPECIFIED: (export.MARKDOWN, "md"),
        research_pb2.REPORT_FORMAT_MARKDOWN: (export.MARKDOWN, "md"),
        research_pb2.REPORT_FORMAT_HTML: (export.HTML, "html"),
        research_pb2.REPORT_FORMAT_PDF: (export.PDF, "pdf"),
    }.items():
        content_type, filename, content = export.render(r, fmt)
        assert (content_type, filename) == (ctype, f"research-{JOB}.{ext}")
        assert content
    with pytest.raises(export.UnknownFormat, match="99"):
        export.render(r, 99)


def test_markdown_has_sections_citations_flags_and_sources() -> None:
    _, _, content = export.render(report(), research_pb2.REPORT_FORMAT_MARKDOWN)
    md = content.decode("utf-8")
    assert md.startswith("# Tides and the Moon\n")
    assert "## Gravity and the bulges" in md and "## Москва и Αθήνα" in md
    # Markers link to their citation, which carries the anchor, the source and the passage.
    assert "[\\[1\\]](#cite-1)" in md and '<a id="cite-1"></a>1. [How tides work]' in md
    assert "(<https://oceans.example.org/tides>)" in md
    assert "The gravitational pull of the Moon is strongest on the near side." in md
    # The flagged claim is listed as unverified, with why.
    assert "> - ⚠ Tides are caused by wind — contradicted by a more credible source \\[1\\]" in md
    # Sources with credibility and every reason; the uncited one said so, its bad URL not a link.
    assert "credibility 0.82" in md and "domain\\_tier +0.25: tier 'reference'" in md
    assert "author -0.05: no author found" in md
    assert "- Windy blog — credibility 0.21 (not cited)" in md
    assert "javascript:" not in md


def test_markdown_escapes_what_a_page_could_inject() -> None:
    _, _, content = export.render(report(title=HOSTILE), research_pb2.REPORT_FORMAT_MARKDOWN)
    md = content.decode("utf-8")
    title = md.splitlines()[0]
    assert "<script>" not in md and "](javascript" not in md
    assert title == (
        '# \\<script\\>alert\\("x"\\)\\</script\\> \\[click\\]\\(javascript:alert\\(1\\)\\) '
        "\\<img src=x onerror=y\\>"
    )


class _Page(HTMLParser):
    """What a browser would see: the text, the tags, links and ids."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self.marks: list[str] = []
        self._in_mark = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if tag == "a" and found.get("href"):
            self.hrefs.append(str(found["href"]))
        if found.get("id"):
            self.ids.add(str(found["id"]))
        self._in_mark = tag == "mark"

    def handle_endtag(self, tag: str) -> None:
        if tag == "mark":
            self._in_mark = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_mark:
            self.marks.append(data)


def parsed(fmt_report: research_pb2.Report) -> tuple[str, _Page]:
    _, _, content = export.render(fmt_report, research_pb2.REPORT_FORMAT_HTML)
    page = _Page()
    page.feed(content.decode("utf-8"))
    return content.decode("utf-8"), page


def test_html_is_a_page_with_linked_citations_marked_claims_and_sources() -> None:
    raw, page = parsed(report())
    assert raw.startswith("<!DOCTYPE html>")
    text = "".join(page.text)
    assert "Gravity and the bulges" in text and "Москва и Αθήνα" in text
    # Every inline marker points at a citation that exists on the page.
    cites = [h for h in page.hrefs if h.startswith("#cite-")]
    assert sorted(set(cites)) == ["#cite-1", "#cite-2"]
    assert {"cite-1", "cite-2"} <= page.ids
    # Citations and sources link out; query strings are escaped, not broken.
    assert "https://physics.example.edu/bulge?a=1&b=(2)" in page.hrefs
    assert 'href="https://physics.example.edu/bulge?a=1&amp;b=(2)"' in raw
    # Flagged claims are visibly marked: the "(unverified)" in the text and the list with why.
    assert "(unverified)" in page.marks and "⚠ unverified" in page.marks
    assert "contradicted by a more credible source [1]" in text
    # Sources with credibility and reasons; a non-web URL is text, never a link.
    assert "0.82" in text and "domain_tier +0.25: tier 'reference'" in text
    assert "Windy blog (not cited)" in text
    assert not any(h.startswith("javascript") for h in page.hrefs)
    # Self-contained: no script, nothing fetched from elsewhere.
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags


def test_html_escapes_every_text() -> None:
    hostile = report(title=HOSTILE, extra_text=" " + HOSTILE)
    hostile.citations[0].passage = HOSTILE
    hostile.sources[0].reasons[0].detail = HOSTILE
    raw, page = parsed(hostile)
    assert page.tags.count("script") == 0 and "img" not in page.tags
    assert not any(h.startswith("javascript") for h in page.hrefs)
    # The text reads as it was written, inert.
    assert "".join(page.text).count('<script>alert("x")</script>') >= 4
    assert "&lt;script&gt;" in raw


def pdf_text(content: bytes) -> str:
    doc = pypdfium2.PdfDocument(io.BytesIO(content))
    try:
        return "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
    finally:
        doc.close()


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_pdf_holds_the_report_in_any_script() -> None:
    content_type, _, content = export.render(report(), research_pb2.REPORT_FORMAT_PDF)
    assert content_type == "application/pdf" and content.startswith(b"%PDF-")
    text = squash(pdf_text(content))
    for expected in (
        "Tides and the Moon",
        "Gravity and the bulges",
        "Москва и Αθήνα",
        "Приливы — Παλίρροια [2].",
        "[1] How tides work",
        "https://oceans.example.org/tides",
        "[unverified] Tides are caused by wind — contradicted by a more credible source [1]",
        "credibility 0.82",
        "domain_tier +0.25: tier 'reference'",
        "(not cited)",
    ):
        assert expected in text, expected


def test_pdf_wraps_long_text_over_pages() -> None:
    long = report(extra_text=" " + " ".join(["A sentence about tides [1]."] * 600))
    long.citations[1].url = "https://example.org/" + "x" * 400
    text = squash(pdf_text(export.render(long, research_pb2.REPORT_FORMAT_PDF)[2]))
    doc = pypdfium2.PdfDocument(export.render(long, research_pb2.REPORT_FORMAT_PDF)[2])
    assert len(doc) > 2
    doc.close()
    assert text.count("A sentence about tides") == 600


def test_pdf_without_a_unicode_font_replaces_what_it_cannot_draw(tmp_path: Path) -> None:
    content = export.pdf(report(), font_dirs=(tmp_path,))
    text = squash(pdf_text(content))
    assert "Gravity and the bulges" in text and "?????? ? ?????" in text

"""A research report rendered as a file: Markdown, a self-contained HTML page, or a PDF.

Everything in a report comes from the web (titles, passages, claims drawn from pages), so every
text is escaped for the format it lands in, and only http(s) URLs ever become links."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from edrs_proto.research.v1 import research_pb2
from fpdf import FPDF
from fpdf.enums import XPos, YPos

MARKDOWN = "text/markdown; charset=utf-8"
HTML = "text/html; charset=utf-8"
PDF = "application/pdf"

# A citation marker in a section's text: "[1]", "[12]".
_MARKER = re.compile(r"\[(\d{1,4})\]")
# How a flagged claim is marked in a section's text (ReportSection.text, research.proto).
UNVERIFIED = "(unverified)"
# Characters Markdown gives a meaning to; escaped with a backslash (CommonMark allows it before
# any ASCII punctuation), so a page's text cannot become a link, an image, HTML or a heading.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-!|~])")
# A Unicode TrueType font with Latin, Greek and Cyrillic: Debian's fonts-dejavu-core (the Makefile
# installs it; the image has it). Without one, the PDF falls back to a core font and shows "?" for
# what Latin-1 cannot hold rather than failing.
FONT_DIRS = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
    Path("/usr/local/share/fonts/dejavu"),
)
PASSAGE_EXCERPT = 300


class UnknownFormat(ValueError):
    """The format is not one of research_pb2.ReportFormat."""


def render(report: research_pb2.Report, fmt: int) -> tuple[str, str, bytes]:
    """(content type, file name, content) of `report` as `fmt` (a ReportFormat; UNSPECIFIED is
    Markdown). UnknownFormat for any other number."""
    stem = f"research-{report.job_id or 'report'}"
    if fmt in (research_pb2.REPORT_FORMAT_UNSPECIFIED, research_pb2.REPORT_FORMAT_MARKDOWN):
        return MARKDOWN, f"{stem}.md", markdown(report).encode("utf-8")
    if fmt == research_pb2.REPORT_FORMAT_HTML:
        return HTML, f"{stem}.html", html_page(report).encode("utf-8")
    if fmt == research_pb2.REPORT_FORMAT_PDF:
        return PDF, f"{stem}.pdf", pdf(report)
    raise UnknownFormat(f"unknown report format {fmt}")


def _title(report: research_pb2.Report) -> str:
    return report.title or report.question or "Research report"


def _web_url(url: str) -> str | None:
    """`url` when it is an absolute http(s) URL (the only kind made a link), else None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def _credibility(value: float) -> str:
    return f"{value:.2f}"


def _weight(value: float) -> str:
    return f"{value:+.2f}"


def _excerpt(text: str, limit: int = PASSAGE_EXCERPT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _flagged(section: research_pb2.ReportSection) -> list[research_pb2.ReportClaim]:
    return [c for c in section.claims if not c.supported]


# -- Markdown ---------------------------------------------------------------------------------


def md_escape(text: str) -> str:
    """`text` as literal Markdown text: special characters backslash-escaped, on one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.split()))


def _md_text(text: str, numbers: set[int]) -> str:
    """A section's text escaped, with its citation markers kept as links to the citation list."""
    out: list[str] = []
    last = 0
    for match in _MARKER.finditer(text):
        out.append(md_escape(text[last : match.start()]))
        number = int(match.group(1))
        out.append(
            f"[\\[{number}\\]](#cite-{number})" if number in numbers else md_escape(match.group(0))
        )
        last = match.end()
    out.append(md_escape(text[last:]))
    return "".join(out)


def _md_link(label: str, url: str) -> str:
    target = _web_url(url)
    if target is None:
        return md_escape(label or url)
    # In angle brackets a URL may hold parentheses; "<", ">" and spaces are percent-encoded.
    safe = quote(target, safe=":/?#[]@!$&'()*+,;=%-._~")
    return f"[{md_escape(label or url)}](<{safe}>)"


def _md_paragraphs(text: str, numbers: set[int]) -> list[str]:
    return [_md_text(p, numbers) for p in re.split(r"\n\s*\n", text) if p.strip()]


def markdown(report: research_pb2.Report) -> str:
    numbers = {c.number for c in report.citations}
    lines = [f"# {md_escape(_title(report))}", ""]
    if report.question:
        lines += [f"**Question:** {md_escape(report.question)}", ""]
    if report.HasField("create_time"):
        stamp = report.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC")
        lines += [f"*Written {stamp}.*", ""]
    if report.summary:
        lines += ["## Summary", ""]
        for paragraph in _md_paragraphs(report.summary, numbers):
            lines += [paragraph, ""]
    for section in report.sections:
        lines += [f"## {md_escape(section.heading or 'Findings')}", ""]
        for paragraph in _md_paragraphs(section.text, numbers):
            lines += [paragraph, ""]
        flagged = _flagged(section)
        if flagged:
            lines += ["> **Unverified claims** (not stated as fact):", ">"]
            for claim in flagged:
                note = f" — {md_escape(claim.note)}" if claim.note else ""
                lines.append(f"> - ⚠ {md_escape(claim.text)}{note}")
            lines.append("")
    if report.citations:
        lines += ["## Citations", ""]
        for c in report.citations:
            where = _md_link(c.title or c.url, c.url)
            lines.append(f'<a id="cite-{c.number}"></a>{c.number}. {where}')
            if c.passage:
                lines.append(f"   > {md_escape(_excerpt(c.passage))}")
        lines.append("")
    if report.sources:
        lines += ["## Sources", ""]
        for s in report.sources:
            cited = "" if s.cited else " (not cited)"
            lines.append(
                f"- {_md_link(s.title or s.url, s.url)} — credibility "
                f"{_credibility(s.credibility)}{cited}"
            )
            for r in s.reasons:
                lines.append(
                    f"  - {md_escape(r.signal)} {_weight(r.weight)}: {md_escape(r.detail)}"
                )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# -- HTML -------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:52rem;margin:2rem auto;
padding:0 1rem;line-height:1.55;color:#1f2328}
h1{font-size:1.7rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
.question{color:#57606a}.cite{text-decoration:none;font-size:.85em;vertical-align:super}
mark.unverified{background:#fff1c2;color:#6a4a00;padding:0 .2em;border-radius:3px}
.flagged{border-left:4px solid #d4a72c;background:#fff8e1;padding:.5rem 1rem;margin:1rem 0}
.flagged li{margin:.25rem 0}blockquote{color:#57606a;margin:.25rem 0 .75rem 1rem}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #d0d7de;padding:.35rem .5rem;
vertical-align:top;text-align:left}.reasons{margin:0;padding-left:1.1rem;font-size:.9em}
.uncited{color:#57606a}
""".strip()


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _html_link(label: str, url: str) -> str:
    target = _web_url(url)
    if target is None:
        return _h(label or url)
    return f'<a href="{_h(target)}" rel="noopener noreferrer nofollow">{_h(label or url)}</a>'


def _html_text(text: str, numbers: set[int]) -> str:
    """A paragraph escaped, citation markers linked to the citation list, "(unverified)" marked."""
    out: list[str] = []
    last = 0
    for match in _MARKER.finditer(text):
        out.append(_h(text[last : match.start()]))
        number = int(match.group(1))
        if number in numbers:
            out.append(f'<a class="cite" href="#cite-{number}">[{number}]</a>')
        else:
            out.append(_h(match.group(0)))
        last = match.end()
    out.append(_h(text[last:]))
    marked = "".join(out)
    return marked.replace(
        _h(UNVERIFIED), f'<mark class="unverified" title="not verified">{_h(UNVERIFIED)}</mark>'
    )


def _html_paragraphs(text: str, numbers: set[int]) -> str:
    return "".join(
        f"<p>{_html_text(p, numbers)}</p>" for p in re.split(r"\n\s*\n", text) if p.strip()
    )


def html_page(report: research_pb2.Report) -> str:
    numbers = {c.number for c in report.citations}
    title = _title(report)
    body: list[str] = [f"<h1>{_h(title)}</h1>"]
    if report.question:
        body.append(f'<p class="question"><strong>Question:</strong> {_h(report.question)}</p>')
    if report.summary:
        body.append(
            f'<section id="summary"><h2>Summary</h2>{_html_paragraphs(report.summary, numbers)}</section>'
        )
    for i, section in enumerate(report.sections, 1):
        parts = [f'<section id="section-{i}"><h2>{_h(section.heading or "Findings")}</h2>']
        parts.append(_html_paragraphs(section.text, numbers))
        flagged = _flagged(section)
        if flagged:
            items = "".join(
                f'<li><mark class="unverified">⚠ unverified</mark> {_h(c.text)}'
                + (f" — <em>{_h(c.note)}</em>" if c.note else "")
                + "</li>"
                for c in flagged
            )
            parts.append(
                '<aside class="flagged"><strong>Unverified claims</strong> (not stated as fact)'
                f"<ul>{items}</ul></aside>"
            )
        parts.append("</section>")
        body.append("".join(parts))
    if report.citations:
        entries = []
        for c in report.citations:
            passage = f"<blockquote>{_h(_excerpt(c.passage))}</blockquote>" if c.passage else ""
            entries.append(
                f'<li id="cite-{c.number}" value="{c.number}">{_html_link(c.title or c.url, c.url)}'
                f"{passage}</li>"
            )
        body.append(
            f'<section id="citations"><h2>Citations</h2><ol>{"".join(entries)}</ol></section>'
        )
    if report.sources:
        rows = []
        for s in report.sources:
            reasons = "".join(
                f"<li>{_h(r.signal)} {_h(_weight(r.weight))}: {_h(r.detail)}</li>"
                for r in s.reasons
            )
            cls = "" if s.cited else ' class="uncited"'
            rows.append(
                f"<tr{cls}><td>{_html_link(s.title or s.url, s.url)}"
                + ("" if s.cited else " (not cited)")
                + f"</td><td>{_h(_credibility(s.credibility))}</td>"
                f'<td><ul class="reasons">{reasons}</ul></td></tr>'
            )
        body.append(
            '<section id="sources"><h2>Sources</h2><table><thead><tr><th>Source</th>'
            "<th>Credibility</th><th>Why</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></section>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Self-contained and inert: no script, nothing loaded from elsewhere.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>{_h(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


# -- PDF --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fonts:
    family: str
    unicode: bool


def _font_files(dirs: Iterable[Path] = FONT_DIRS) -> tuple[Path, Path | None] | None:
    for folder in dirs:
        regular = folder / "DejaVuSans.ttf"
        if regular.is_file():
            bold = folder / "DejaVuSans-Bold.ttf"
            return regular, bold if bold.is_file() else None
    return None


def _setup_fonts(doc: FPDF, dirs: Sequence[Path] = FONT_DIRS) -> _Fonts:
    found = _font_files(dirs)
    if found is None:
        return _Fonts("helvetica", unicode=False)
    regular, bold = found
    doc.add_font("report", "", str(regular))
    doc.add_font("report", "B", str(bold or regular))
    return _Fonts("report", unicode=True)


class _Writer:
    def __init__(self, fonts: _Fonts, doc: FPDF) -> None:
        self.fonts = fonts
        self.doc = doc

    def text(self, value: str) -> str:
        if self.fonts.unicode:
            return value
        # A core font holds Latin-1 only.
        return value.encode("latin-1", "replace").decode("latin-1")

    def para(
        self,
        value: str,
        *,
        size: float = 10.5,
        bold: bool = False,
        link: str = "",
        gap: float = 1.5,
    ) -> None:
        doc = self.doc
        doc.set_font(self.fonts.family, "B" if bold else "", size)
        doc.multi_cell(
            0, size * 0.5, self.text(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT, link=link
        )
        doc.ln(gap)

    def heading(self, value: str, size: float = 14) -> None:
        self.doc.ln(2)
        self.para(value, size=size, bold=True, gap=2)


def pdf(report: research_pb2.Report, font_dirs: Sequence[Path] = FONT_DIRS) -> bytes:
    doc = FPDF(format="A4")
    doc.set_auto_page_break(auto=True, margin=15)
    doc.set_title(_title(report))
    doc.set_creator("EDRS research")
    fonts = _setup_fonts(doc, font_dirs)
    doc.add_page()
    w = _Writer(fonts, doc)
    w.para(_title(report), size=18, bold=True, gap=3)
    if report.question:
        w.para(f"Question: {report.question}", size=10.5, gap=3)
    if report.summary:
        w.heading("Summary")
        for p in re.split(r"\n\s*\n", report.summary):
            if p.strip():
                w.para(" ".join(p.split()))
    for section in report.sections:
        w.heading(section.heading or "Findings")
        for p in re.split(r"\n\s*\n", section.text):
            if p.strip():
                w.para(" ".join(p.split()))
        flagged = _flagged(section)
        if flagged:
            doc.set_text_color(140, 90, 0)
            w.para("Unverified claims (not stated as fact):", bold=True, gap=0.5)
            for claim in flagged:
                note = f" — {claim.note}" if claim.note else ""
                w.para(f"[unverified] {claim.text}{note}", size=10, gap=0.8)
            doc.set_text_color(0, 0, 0)
    if report.citations:
        w.heading("Citations")
        for c in report.citations:
            target = _web_url(c.url) or ""
            w.para(f"[{c.number}] {c.title or c.url}", bold=True, gap=0.3)
            if c.url:
                doc.set_text_color(30, 80, 170)
                w.para(c.url, size=9, link=target, gap=0.3)
                doc.set_text_color(0, 0, 0)
            if c.passage:
                w.para(f"“{_excerpt(c.passage)}”", size=9, gap=1.5)
    if report.sources:
        w.heading("Sources")
        for s in report.sources:
            cited = "" if s.cited else " (not cited)"
            w.para(
                f"{s.title or s.url} — credibility {_credibility(s.credibility)}{cited}",
                bold=True,
                gap=0.3,
            )
            if s.url:
                w.para(s.url, size=9, link=_web_url(s.url) or "", gap=0.3)
            for r in s.reasons:
                w.para(f"• {r.signal} {_weight(r.weight)}: {r.detail}", size=9, gap=0.2)
            doc.ln(1.5)
    return bytes(doc.output())

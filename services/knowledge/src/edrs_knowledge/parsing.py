"""Documents in, normalised text and structure out: PDF, DOCX, HTML, Markdown and plain text.

The format comes from the bytes (magic numbers), never from the file name; a name or declared
content type that says otherwise is refused. Every format becomes the same thing: one normalised
text, and blocks (heading, paragraph, list, table, code) that cut it exactly by character
offsets, each with its heading path and, for PDF, its page. Citations point into that text.
"""

from __future__ import annotations

import functools
import io
import re
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
# A DOCX is a ZIP: refuse one that would inflate to more than this many times its own size.
_MAX_INFLATION = 100
BLOCK_SEPARATOR = "\n\n"


class Format(StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    HTML = "html"
    MARKDOWN = "markdown"
    TEXT = "text"


CONTENT_TYPES = {
    Format.PDF: "application/pdf",
    Format.DOCX: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    Format.HTML: "text/html",
    Format.MARKDOWN: "text/markdown",
    Format.TEXT: "text/plain",
}
_EXTENSIONS = {
    ".pdf": Format.PDF,
    ".docx": Format.DOCX,
    ".html": Format.HTML,
    ".htm": Format.HTML,
    ".xhtml": Format.HTML,
    ".md": Format.MARKDOWN,
    ".markdown": Format.MARKDOWN,
    ".txt": Format.TEXT,
    ".text": Format.TEXT,
}
_TYPES = {t: f for f, t in CONTENT_TYPES.items()} | {
    "application/xhtml+xml": Format.HTML,
    "text/x-markdown": Format.MARKDOWN,
}


class BlockKind(StrEnum):
    HEADING = "heading"
    PARAGRAPH = "paragraph"
    LIST = "list"
    TABLE = "table"
    CODE = "code"


class DocumentError(Exception):
    """A document that cannot be ingested; `code` is stable, the message says why."""

    code = "invalid_document"


class UnsupportedFormat(DocumentError):
    code = "unsupported_format"


class FormatMismatch(DocumentError):
    """The name or declared type says one format, the bytes are another."""

    code = "format_mismatch"


class EncryptedDocument(DocumentError):
    code = "encrypted"


class CorruptDocument(DocumentError):
    code = "corrupt"


class EmptyDocument(DocumentError):
    code = "empty"


class DocumentTooLarge(DocumentError):
    code = "too_large"


@dataclass(frozen=True)
class Block:
    """A run of the document text: `ParsedDocument.text[start:end] == text`."""

    kind: BlockKind
    text: str
    start: int
    end: int
    heading_path: tuple[str, ...]  # the headings this block is under (a heading: and itself)
    page: int | None = None  # 1-based, PDF only
    level: int | None = None  # a heading's level, 1 = top


@dataclass(frozen=True)
class ParsedDocument:
    format: Format
    text: str
    blocks: tuple[Block, ...]
    title: str | None = None
    pages: int | None = None  # PDF only

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


# Normalisation

# C0/C1 controls except tab and newline; U+FFFE/FFFF and the soft hyphen PDF text layers carry.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\ufffe\uffff]")
_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than newline


def _clean(text: str, *, compatibility: bool = False) -> str:
    # NFKC for PDF text: its fonts write ligatures (the "ﬁ" of "ﬁnance") as one code point.
    text = unicodedata.normalize("NFKC" if compatibility else "NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def _inline(text: str, *, compatibility: bool = False) -> str:
    """One paragraph's text: every run of whitespace becomes one space."""
    return " ".join(_clean(text, compatibility=compatibility).split())


def _lines(text: str) -> str:
    """Lines kept (lists, tables), spaces within each collapsed, blank lines dropped."""
    lines = (_SPACES.sub(" ", line).strip() for line in _clean(text).split("\n"))
    return "\n".join(line for line in lines if line)


class _Builder:
    """Appends blocks to the normalised text, tracking offsets and the heading path."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._blocks: list[Block] = []
        self._headings: list[tuple[int, str]] = []  # (level, text), outermost first

    def heading(self, text: str, level: int, page: int | None = None) -> None:
        text = _inline(text)
        if not text:
            return
        while self._headings and self._headings[-1][0] >= level:
            self._headings.pop()
        self._headings.append((level, text))
        self._add(BlockKind.HEADING, text, page, level)

    def block(self, kind: BlockKind, text: str, page: int | None = None) -> None:
        if text.strip():
            self._add(kind, text, page, None)

    def _add(self, kind: BlockKind, text: str, page: int | None, level: int | None) -> None:
        if self._parts:
            self._parts.append(BLOCK_SEPARATOR)
            self._length += len(BLOCK_SEPARATOR)
        start = self._length
        self._parts.append(text)
        self._length += len(text)
        path = tuple(h for _, h in self._headings)
        self._blocks.append(Block(kind, text, start, self._length, path, page, level))

    def build(
        self, fmt: Format, title: str | None, pages: int | None = None, what: str = ""
    ) -> ParsedDocument:
        if not self._blocks:
            raise EmptyDocument(f"the {fmt.value.upper()} document has no text{what}")
        if title is None:
            title = next((b.text for b in self._blocks if b.kind is BlockKind.HEADING), None)
        return ParsedDocument(fmt, "".join(self._parts), tuple(self._blocks), title, pages)


# Detection


def _declared(filename: str | None, content_type: str | None) -> Format | None:
    """What the caller says the document is: its content type, else its file name's extension."""
    if content_type:
        base = content_type.split(";", 1)[0].strip().lower()
        if base in _TYPES:
            return _TYPES[base]
        if base not in ("", "application/octet-stream"):
            raise UnsupportedFormat(
                f"content type {base!r} is not supported; send PDF, DOCX, HTML, Markdown or "
                "plain text"
            )
    if filename:
        dot = filename.rfind(".")
        extension = filename[dot:].lower() if dot > 0 else ""
        if extension in _EXTENSIONS:
            return _EXTENSIONS[extension]
        if extension:
            raise UnsupportedFormat(
                f"file type {extension!r} ({filename}) is not supported; send .pdf, .docx, "
                ".html, .md or .txt"
            )
    return None


# What common binary formats start with, to name them in the refusal.
_BINARY_SIGNATURES = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"Rar!", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x7fELF", "an executable"),
    (b"MZ", "a Windows executable"),
]
# Encrypted Office files are OLE compound files holding a stream named "EncryptedPackage".
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
_HTML_START = re.compile(
    rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.I | re.S
)
_HTML_TAG = re.compile(r"<(p|div|h[1-6]|ul|ol|table|article|section|span|a|br)[\s>/]", re.I)


def _sniff(data: bytes) -> Format | str:
    """The format the bytes are, or a description of what they are instead."""
    # The PDF header may follow up to 1 KB of junk (the specification tolerates it).
    if b"%PDF-" in data[:1024]:
        return Format.PDF
    if data.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile:
            return "a damaged ZIP archive"
        if "word/document.xml" in names:
            return Format.DOCX
        if "xl/workbook.xml" in names:
            return "an Excel workbook"
        if "ppt/presentation.xml" in names:
            return "a PowerPoint presentation"
        return "a ZIP archive"
    if data.startswith(_OLE):
        if _ENCRYPTED_PACKAGE in data:
            return "an encrypted Office document"
        return "a legacy Office document (.doc, .xls or .ppt)"
    for signature, name in _BINARY_SIGNATURES:
        if data.startswith(signature):
            return name
    return Format.TEXT  # text of some kind, if it decodes


def _decode(data: bytes) -> str:
    for bom, encoding in (
        (b"\xef\xbb\xbf", "utf-8"),
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
    ):
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError:
                raise CorruptDocument(f"the text is not valid {encoding}") from None
    if b"\x00" in data[:8192]:
        raise UnsupportedFormat("the content is binary data, not a supported document format")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Not UTF-8: most likely Windows-1252, the legacy default of Western systems (a superset of
    # Latin-1's printable characters). Guessing among all code pages picks wrongly on short
    # texts, so the rule is fixed; the five bytes cp1252 leaves undefined read as Latin-1.
    return data.decode("latin-1").translate(_CP1252)


# Latin-1 and Windows-1252 differ only in 0x80-0x9F, where cp1252 has its typographic characters.
_CP1252 = {
    byte: bytes([byte]).decode("cp1252")
    for byte in range(0x80, 0xA0)
    if byte not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
}


def _looks_like_html(text: str) -> bool:
    head = text[:4096].encode("utf-8", "ignore")
    return bool(_HTML_START.match(head)) or len(_HTML_TAG.findall(text[:4096])) >= 3


def parse_document(
    data: bytes,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> ParsedDocument:
    """Parse `data` by what it is; `filename` and `content_type` must agree with it.

    Raises a `DocumentError` subclass (its `code` and message say why) for a document that is
    too large, empty, encrypted, corrupt, of an unsupported format, or not what it claims.
    """
    if len(data) > max_bytes:
        raise DocumentTooLarge(f"the document is {len(data):,} bytes; the limit is {max_bytes:,}")
    if not data.strip():
        raise EmptyDocument("the document is empty")
    declared = _declared(filename, content_type)
    claimed = (
        f"content type {content_type.split(';', 1)[0].strip()}" if content_type else str(filename)
    )
    sniffed = _sniff(data)
    if not isinstance(sniffed, Format):
        if sniffed.startswith("an encrypted"):
            raise EncryptedDocument(f"the document is {sniffed}; remove the password and resend")
        raise UnsupportedFormat(f"the content is {sniffed}, not a supported document format")
    if sniffed in (Format.PDF, Format.DOCX):
        if declared is not None and declared is not sniffed:
            raise FormatMismatch(
                f"the content is a {sniffed.value.upper()} document but {claimed} says "
                f"{declared.value}"
            )
        if sniffed is Format.PDF:
            return _parse_pdf(data)
        return _parse_docx(data, max_bytes)
    if declared in (Format.PDF, Format.DOCX):
        raise FormatMismatch(
            f"{claimed} says {declared.value.upper()} but the content is not a "
            f"{declared.value.upper()} document (it has no {declared.value.upper()} signature)"
        )
    text = _decode(data)
    if not text.strip():
        raise EmptyDocument("the document has only whitespace")
    is_html = _looks_like_html(text)
    if declared is Format.HTML and not is_html:
        raise FormatMismatch(f"{claimed} says HTML but the content has no HTML markup")
    if declared in (Format.MARKDOWN, Format.TEXT) and _HTML_START.match(
        text[:4096].encode("utf-8", "ignore")
    ):
        raise FormatMismatch(f"the content is an HTML document but {claimed} says {declared}")
    if declared is Format.HTML or (declared is None and is_html):
        return _parse_html(text)
    if declared is Format.TEXT:
        return _parse_text(text)
    return _parse_markdown(text)


# PDF

# A gap between two lines wider than this share of the font size starts a new paragraph; a line
# whose font is this much larger than the page's body text is a heading.
_PARAGRAPH_GAP = 0.9
_HEADING_SCALE = 1.2
_MAX_HEADING_CHARS = 150


@dataclass
class _Line:
    text: str
    top: float
    bottom: float
    size: float


def _pdf_lines(textpage: Any, raw: Any) -> list[_Line]:
    lines = []
    for i in range(textpage.count_rects()):
        left, bottom, right, top = textpage.get_rect(i)
        text = textpage.get_text_bounded(left, bottom, right, top)
        if not text.strip():
            continue
        index = textpage.get_index(left + 0.5, (top + bottom) / 2, 2.0, 2.0)
        size = float(raw.FPDFText_GetFontSize(textpage, index)) if index >= 0 else top - bottom
        lines.append(_Line(text, top, bottom, size or (top - bottom)))
    return lines


def _page_lines(page: Any, raw: Any) -> list[_Line]:
    textpage = page.get_textpage()
    try:
        return _pdf_lines(textpage, raw)
    finally:
        textpage.close()


def _parse_pdf(data: bytes) -> ParsedDocument:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_raw

    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == pdfium_raw.FPDF_ERR_PASSWORD:
            raise EncryptedDocument(
                "the PDF is encrypted with a password; remove it and resend"
            ) from None
        if code == pdfium_raw.FPDF_ERR_SECURITY:
            raise EncryptedDocument("the PDF uses an unsupported security handler") from None
        raise CorruptDocument(f"the PDF cannot be read: {exc}") from None
    try:
        pages = [(n, _page_lines(page, pdfium_raw)) for n, page in _pages(document)]
        title = (document.get_metadata_dict().get("Title") or "").strip() or None
    except pdfium.PdfiumError as exc:
        raise CorruptDocument(f"the PDF cannot be read: {exc}") from None
    finally:
        document.close()
    sizes = sorted(line.size for _, lines in pages for line in lines)
    body = sizes[len(sizes) // 2] if sizes else 0.0
    heading_sizes = sorted(
        {
            round(line.size)
            for _, lines in pages
            for line in lines
            if line.size >= body * _HEADING_SCALE
        },
        reverse=True,
    )
    builder = _Builder()
    for number, lines in pages:
        paragraph: list[_Line] = []
        for line in lines:
            text = _inline(line.text, compatibility=True)
            if round(line.size) in heading_sizes and len(text) <= _MAX_HEADING_CHARS:
                _pdf_paragraph(builder, paragraph, number)
                builder.heading(text, heading_sizes.index(round(line.size)) + 1, number)
                continue
            if paragraph and paragraph[-1].bottom - line.top > _PARAGRAPH_GAP * line.size:
                _pdf_paragraph(builder, paragraph, number)
            paragraph.append(line)
        _pdf_paragraph(builder, paragraph, number)
    return builder.build(
        Format.PDF,
        title,
        len(pages),
        f" layer on any of its {len(pages)} pages (a scan? text recognition is not supported)",
    )


def _pdf_paragraph(builder: _Builder, lines: list[_Line], page: int) -> None:
    if lines:
        text = _inline(" ".join(line.text for line in lines), compatibility=True)
        builder.block(BlockKind.PARAGRAPH, text, page)
        lines.clear()


def _pages(document: Any) -> Iterator[tuple[int, Any]]:
    for index in range(len(document)):
        page = document[index]
        try:
            yield index + 1, page
        finally:
            page.close()


# DOCX


def _parse_docx(data: bytes, max_bytes: int) -> ParsedDocument:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.table import Table
    from docx.text.paragraph import Paragraph
    from lxml.etree import XMLSyntaxError

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    if inflated > max(max_bytes, _MAX_INFLATION * len(data)):
        raise DocumentTooLarge(
            f"the DOCX inflates to {inflated:,} bytes from {len(data):,}; refused as a ZIP bomb"
        )
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, XMLSyntaxError, zipfile.BadZipFile) as exc:
        raise CorruptDocument(f"the DOCX cannot be read: {exc}") from None
    builder = _Builder()
    items: list[str] = []

    def flush_list() -> None:
        if items:
            builder.block(BlockKind.LIST, "\n".join(items))
            items.clear()

    for element in document.element.body.iterchildren():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            paragraph = Paragraph(element, document)
            text = _inline(paragraph.text)
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            level = _docx_heading_level(style)
            numbered = element.pPr is not None and element.pPr.numPr is not None
            if level is not None and text:
                flush_list()
                builder.heading(text, level)
            elif (numbered or style.startswith("List")) and text:
                items.append(f"- {text}")
            else:
                flush_list()
                builder.block(BlockKind.PARAGRAPH, text)
        elif tag == "tbl":
            flush_list()
            table = Table(element, document)
            rows = []
            for row in table.rows:
                cells: list[str] = []
                for cell in row.cells:
                    value = _inline(cell.text)
                    # A merged cell repeats in every grid column it spans; keep it once.
                    if not cells or cells[-1] != value:
                        cells.append(value)
                rows.append(" | ".join(cells))
            builder.block(BlockKind.TABLE, _lines("\n".join(rows)))
    flush_list()
    title = (document.core_properties.title or "").strip() or None
    return builder.build(Format.DOCX, title)


def _docx_heading_level(style: str) -> int | None:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    # "Title" is the top of the path, so "Heading 1" sits under it.
    return int(match[1]) + 1 if match else None


# HTML


def _parse_html(text: str) -> ParsedDocument:
    import trafilatura
    from lxml import etree, html

    title = None
    try:
        tree = html.fromstring(text)
        found = tree.findtext(".//title")
        title = _inline(found) or None if found else None
    except (etree.ParserError, ValueError):
        pass
    extracted = trafilatura.extract(
        text,
        output_format="xml",
        include_tables=True,
        include_comments=False,
        include_links=False,
        include_formatting=False,
        favor_recall=True,
        with_metadata=False,
    )
    builder = _Builder()
    if extracted:
        root = etree.fromstring(extracted.encode())
        main = root.find("main")
        for element in main if main is not None else []:
            _html_element(builder, element)
    else:
        # Too little for trafilatura's main-content heuristics: take the body's text as it is.
        _, body_text, _ = trafilatura.baseline(text)
        for paragraph in re.split(r"\n\s*\n", body_text):
            builder.block(BlockKind.PARAGRAPH, _inline(paragraph))
    return builder.build(Format.HTML, title)


def _html_element(builder: _Builder, element: Any) -> None:
    text = "".join(element.itertext())
    if element.tag == "head":
        match = re.fullmatch(r"h([1-6])", element.get("rend", ""))
        builder.heading(text, int(match[1]) if match else 2)
    elif element.tag == "list":
        items = [f"- {_inline(''.join(item.itertext()))}" for item in element.iter("item")]
        builder.block(BlockKind.LIST, "\n".join(i for i in items if i != "- "))
    elif element.tag == "table":
        rows = [
            " | ".join(_inline("".join(cell.itertext())) for cell in row.iter("cell"))
            for row in element.iter("row")
        ]
        builder.block(BlockKind.TABLE, _lines("\n".join(rows)))
    elif element.tag in ("code", "pre"):
        builder.block(BlockKind.CODE, _code(text))
    elif element.tag == "quote":
        for child in element:
            _html_element(builder, child)
        if not len(element):
            builder.block(BlockKind.PARAGRAPH, _inline(text))
    else:
        builder.block(BlockKind.PARAGRAPH, _inline(text))


def _code(text: str) -> str:
    lines = [line.rstrip() for line in _clean(text).split("\n")]
    return "\n".join(lines).strip("\n")


# Markdown


def _parse_markdown(text: str) -> ParsedDocument:
    tokens = _markdown_parser().parse(_clean(text))
    builder = _Builder()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.type == "heading_open":
            builder.heading(_md_inline(tokens[i + 1]), int(token.tag[1:]))
            i += 3
        elif token.type == "paragraph_open":
            builder.block(BlockKind.PARAGRAPH, _inline(_md_inline(tokens[i + 1])))
            i += 3
        elif token.type in ("bullet_list_open", "ordered_list_open"):
            end = _md_close(tokens, i)
            builder.block(BlockKind.LIST, _md_list(tokens[i:end]))
            i = end
        elif token.type == "table_open":
            end = _md_close(tokens, i)
            builder.block(BlockKind.TABLE, _md_table(tokens[i:end]))
            i = end
        elif token.type in ("fence", "code_block"):
            builder.block(BlockKind.CODE, _code(token.content))
            i += 1
        elif token.type == "html_block":
            builder.block(BlockKind.PARAGRAPH, _inline(re.sub(r"<[^>]+>", " ", token.content)))
            i += 1
        else:  # blockquote and hr open/close: their content comes as the tokens above
            i += 1
    return builder.build(Format.MARKDOWN, None)


@functools.cache
def _markdown_parser() -> Any:
    """One parser for the process: building one compiles its rules (most of a small parse)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


def _md_close(tokens: list[Any], start: int) -> int:
    """The index after the token that closes `tokens[start]`."""
    depth = 0
    for j in range(start, len(tokens)):
        depth += tokens[j].nesting
        if depth == 0:
            return j + 1
    return len(tokens)


def _md_inline(token: Any) -> str:
    parts = []
    for child in token.children or []:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)


def _md_list(tokens: list[Any]) -> str:
    lines = []
    depth = -1
    for token in tokens:
        if token.type in ("bullet_list_open", "ordered_list_open"):
            depth += 1
        elif token.type in ("bullet_list_close", "ordered_list_close"):
            depth -= 1
        elif token.type == "inline":
            text = _inline(_md_inline(token))
            if text:
                lines.append("  " * depth + "- " + text)
    return "\n".join(lines)


def _md_table(tokens: list[Any]) -> str:
    rows: list[list[str]] = []
    for token in tokens:
        if token.type == "tr_open":
            rows.append([])
        elif token.type == "inline" and rows:
            rows[-1].append(_inline(_md_inline(token)))
    return "\n".join(" | ".join(row) for row in rows)


# Plain text


def _parse_text(text: str) -> ParsedDocument:
    builder = _Builder()
    for paragraph in re.split(r"\n[^\S\n]*\n", _clean(text)):
        builder.block(BlockKind.PARAGRAPH, _inline(paragraph))
    return builder.build(Format.TEXT, None)

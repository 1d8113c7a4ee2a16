"""DLP of the text read from a document (docs/knowledge.md, "Sensitive data"): the tenant's policy
arrives with a file the gateway could not scan (PDF, DOCX, base64 content, a text file over its scan
limit), and applies here after parsing, before anything is chunked, embedded or indexed — with the
gateway's scanner (edrs_core.dlp), so the same findings are redacted the same way.

`redact` replaces each finding with "[REDACTED:<kind>]" block by block: a finding never spans two
blocks (they are joined by a blank line), and the blocks' offsets, heading paths and the title are
rebuilt from the redacted texts, so citations cut exactly the stored text. `block` refuses the whole
document, naming the kinds (never the values)."""

from __future__ import annotations

from collections import Counter

from edrs_core.dlp import DlpScanner

from edrs_knowledge.parsing import BLOCK_SEPARATOR, Block, DocumentError, ParsedDocument

_SCANNER = DlpScanner()


class SensitiveDataBlocked(DocumentError):
    code = "sensitive_data_blocked"


def apply_policy(
    parsed: ParsedDocument, policy: str, given_title: str = ""
) -> tuple[ParsedDocument, str, dict[str, int]]:
    """The document as the policy leaves it, the given title redacted alike, and the findings
    per kind. "" returns them untouched; "block" raises SensitiveDataBlocked when anything is
    found; "redact" replaces what is found."""
    if not policy:
        return parsed, given_title, {}
    counts: Counter[str] = Counter()
    cache: dict[str, str] = {}

    def clean(text: str, *, count: bool) -> str:
        if text in cache:
            redacted = cache[text]
            if count and redacted != text:
                counts.update(m.kind for m in _SCANNER.find(text))
            return redacted
        redacted, matches = _SCANNER.redact(text)
        cache[text] = redacted
        if count:
            counts.update(m.kind for m in matches)
        return redacted

    texts = [clean(b.text, count=True) for b in parsed.blocks]
    block_texts = {b.text for b in parsed.blocks}
    title = parsed.title
    if title is not None:
        title = clean(title, count=title not in block_texts)
    given = clean(given_title, count=True) if given_title else given_title
    if not counts:
        return parsed, given_title, {}
    if policy == "block":
        kinds = ", ".join(sorted(counts))
        raise SensitiveDataBlocked(
            f"the document holds sensitive data ({kinds}) and your tenant's DLP policy blocks it; "
            "remove it and ingest the document again"
        )
    blocks: list[Block] = []
    offset = 0
    for block, text in zip(parsed.blocks, texts, strict=True):
        if blocks:
            offset += len(BLOCK_SEPARATOR)
        path = tuple(clean(h, count=False) for h in block.heading_path)
        blocks.append(
            Block(block.kind, text, offset, offset + len(text), path, block.page, block.level)
        )
        offset += len(text)
    document = ParsedDocument(
        parsed.format, BLOCK_SEPARATOR.join(texts), tuple(blocks), title, parsed.pages
    )
    return document, given, dict(counts)

"""DLP of parsed text (edrs_knowledge.sensitive), without I/O: what the tenant's policy leaves of a
document, with every block's offsets, heading path and page still exact."""

from __future__ import annotations

import pytest
from edrs_knowledge.parsing import parse_document
from edrs_knowledge.sensitive import SensitiveDataBlocked, apply_policy

MARKDOWN = """# Contacts: jane.doe@example.com

Call the desk on +44 20 7946 0958 or write to jane.doe@example.com.

## Payroll

Her SSN is 536-22-8726; the account is paid monthly.

## Plain

Nothing to hide here.
"""


def parsed():  # type: ignore[no-untyped-def]
    return parse_document(MARKDOWN.encode(), filename="contacts.md", max_bytes=1_000_000)


def test_redact_replaces_each_finding_and_keeps_every_offset_exact() -> None:
    document, title, counts = apply_policy(parsed(), "redact", "Contacts of jane.doe@example.com")
    # Two emails in the text (a heading, a paragraph), one in the title the client gave.
    assert counts == {"email": 3, "phone": 1, "us_ssn": 1}
    assert "example.com" not in document.text and "8726" not in document.text
    assert "7946" not in document.text
    assert "[REDACTED:email]" in document.text and "[REDACTED:us_ssn]" in document.text
    assert "[REDACTED:phone]" in document.text
    for block in document.blocks:
        assert document.text[block.start : block.end] == block.text
        assert all("@" not in heading for heading in block.heading_path)
    assert document.blocks[-1].text == "Nothing to hide here."
    assert document.blocks[-1].heading_path == ("Contacts: [REDACTED:email]", "Plain")
    assert document.title == "Contacts: [REDACTED:email]"
    # The title the client gave is redacted alike.
    assert title == "Contacts of [REDACTED:email]"


def test_the_title_a_heading_gave_is_counted_once() -> None:
    _, _, counts = apply_policy(parsed(), "redact")
    # The first heading holds one email, the paragraph another: the document's title (that same
    # heading) is not a third.
    assert counts["email"] == 2


def test_block_refuses_the_document_naming_the_kinds_never_the_values() -> None:
    with pytest.raises(SensitiveDataBlocked) as blocked:
        apply_policy(parsed(), "block")
    assert blocked.value.code == "sensitive_data_blocked"
    message = str(blocked.value)
    assert "(email, phone, us_ssn)" in message
    assert "jane.doe" not in message and "8726" not in message


def test_no_policy_or_nothing_found_leaves_the_document_as_it_was() -> None:
    original = parsed()
    assert apply_policy(original, "", "a title") == (original, "a title", {})
    clean = parse_document(b"# Hello\n\nNothing here.", filename="a.md", max_bytes=1_000)
    for policy in ("redact", "block"):
        assert apply_policy(clean, policy) == (clean, "", {})

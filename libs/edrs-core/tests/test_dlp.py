"""DLP detectors and redaction, without I/O: what is found, what is rightly left alone."""

from __future__ import annotations

import pytest
from edrs_core.dlp import DlpScanner, Hit

scanner = DlpScanner()


def kinds(text: str) -> list[str]:
    return [m.kind for m in scanner.find(text)]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("my ssn is 536-22-8726", "us_ssn"),
        ("ssn 536 22 8726.", "us_ssn"),
        ("nino AB 12 34 56 C", "uk_nino"),
        ("nino AB123456C", "uk_nino"),
        ("visa 4111 1111 1111 1111", "payment_card"),
        ("mc 5555-5555-5555-4444 exp 12/29", "payment_card"),
        ("amex 378282246310005", "payment_card"),
        ("19 digits 4000000000000000006", "payment_card"),
        ("key AKIAIOSFODNN7EXAMPLE here", "aws_access_key"),
        ("token ghp_" + "a1B2" * 9, "github_token"),
        ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github_token"),
        ("slack xoxb-123456789012-abcdefABCDEF", "slack_token"),
        ("OPENAI_API_KEY=sk-proj-" + "x1" * 20, "openai_key"),
        ("sk-" + "A" * 48, "openai_key"),
        ("maps AIza" + "Sy" + "D" * 33, "google_api_key"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNz\n-----END OPENSSH PRIVATE KEY-----",
            "private_key",
        ),
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQ (truncated", "private_key"),
        ("Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl", "jwt"),
        ("our key edrs_live_7Hq2mZ9xK4pL0vB8nR3tY6", "edrs_api_key"),
        ("write to jane.doe+news@mail.example.org", "email"),
        ("call (415) 555-2671", "phone"),
        ("call +1 415 555 2671", "phone"),
        ("ring +44 20 7946 0958", "phone"),
        ("ring 020 7946 0958", "phone"),
        ("ruf an: +49 30 901820", "phone"),
        ("dsn postgres://app:hunter2@db.internal:5432/app", "connection_credentials"),
        ("amqp://guest:gu@st@rabbit/", "connection_credentials"),
    ],
)
def test_finds(text: str, kind: str) -> None:
    assert kinds(text) == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "ssn 000-12-3456",  # area 000 is never issued
        "ssn 666-12-3456",  # nor 666
        "ssn 912-34-5678",  # nor 900-999
        "ssn 536-00-8726",  # nor group 00
        "ssn 078-05-1120",  # the Woolworth wallet card, publicly known
        "nino QQ123456C",  # Q is never a prefix letter
        "nino BG123456A",  # BG is an excluded prefix
        "card 4111 1111 1111 1112",  # Luhn fails
        "order 1234567812345678",  # 16 digits, Luhn fails
        "tracking 12345678901234567890123",  # longer than any card
        "on 2024-01-15 at 12:30:45",
        "dates 15/01/2024 and 01.02.2023",
        "invoice 12345678",
        "version 1.2.3 build 20240115",
        "sk-learn is a nickname for scikit-learn",
        "the edrs_gateway_settings module",
        "https://example.com/path?q=1",
        "postgres://db.internal:5432/app",  # no credentials
        "user@localhost is not a routable address",
        "eyJhbGciOiJIUzI1NiJ9 alone is only a header",
    ],
)
def test_leaves_alone(text: str) -> None:
    assert kinds(text) == []


# Ids the fleet makes (UUIDv7) that the detectors took for data before ids were exempt: the first
# passes Luhn as a card number, the second is a valid US number. One id in about 600 was refused
# or, redacted, no longer an id (a WebSocket frame's personaId: 422 instead of a turn).
CARD_LIKE_ID = "01a25098-b2d3-7766-8ec2-361233556988"
PHONE_LIKE_ID = "01a2509a-0047-7386-9037-c7792ff25354"


@pytest.mark.parametrize("identifier", [CARD_LIKE_ID, PHONE_LIKE_ID, PHONE_LIKE_ID.upper()])
def test_an_id_is_never_taken_for_data(identifier: str) -> None:
    assert kinds(identifier) == []
    assert kinds(f"persona {identifier}, please") == []
    clean, hits = scanner.scan_json({"personaId": identifier, "text": "Hello?"})
    assert hits == [] and clean["personaId"] == identifier


def test_data_beside_an_id_or_holding_one_is_still_found() -> None:
    assert kinds(f"{CARD_LIKE_ID} card 4111 1111 1111 1111") == ["payment_card"]
    # A password that is a UUID: the finding only overlaps the id, so it is kept.
    assert kinds(f"postgres://app:{CARD_LIKE_ID}@db.internal/app") == ["connection_credentials"]
    # The same digits outside an id are a card number as before.
    assert kinds("ref 8ec2-361233556988") == ["payment_card"]


def test_redaction_replaces_only_the_secret() -> None:
    text, matches = scanner.redact("mail a@b.io, dsn redis://u:p4ss@cache:6379/0, ok")
    assert text == (
        "mail [REDACTED:email], dsn redis://[REDACTED:connection_credentials]@cache:6379/0, ok"
    )
    assert [m.kind for m in matches] == ["email", "connection_credentials"]


def test_overlaps_are_reported_once_by_the_more_specific_detector() -> None:
    # The password part of the URL looks like an email address; it is one finding.
    assert kinds("mysql://root:pw@db.example.com/x") == ["connection_credentials"]
    # A JWT holds digit runs that could pass for a phone number.
    assert kinds("eyJhbGciOiJFUzI1NiJ9.eyJpYXQiOjE3MDAwMDAwMDB9.4155552671") == ["jwt"]


def test_json_values_are_scanned_recursively_and_keys_left_alone() -> None:
    document = {
        "note": "card 4111111111111111",
        "items": [{"contact": "x@y.com"}, 42, None, "fine"],
        "a/b": {"~k": "536-22-8726"},
        "email": "nothing here",
    }
    clean, hits = scanner.scan_json(document)
    assert clean == {
        "note": "card [REDACTED:payment_card]",
        "items": [{"contact": "[REDACTED:email]"}, 42, None, "fine"],
        "a/b": {"~k": "[REDACTED:us_ssn]"},
        "email": "nothing here",
    }
    assert hits == [
        Hit("payment_card", "/note"),
        Hit("email", "/items/0/contact"),
        Hit("us_ssn", "/a~1b/~0k"),
    ]


def test_phone_detection_can_be_turned_off() -> None:
    no_phones = DlpScanner(phone_regions=())
    assert [m.kind for m in no_phones.find("call (415) 555-2671 or +44 20 7946 0958")] == []

"""Webhook signatures: Standard Webhooks (https://www.standardwebhooks.com) for what we send and
receive, and the HMAC-SHA256 header schemes of GitHub and Stripe for what we receive.

Standard Webhooks: the secret is `whsec_` + base64 of the key bytes; the signed content is
`{webhook-id}.{webhook-timestamp}.{body}`; `webhook-signature` is a space-separated list of
`v1,<base64 HMAC-SHA256>`, one per valid secret (two during a rotation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
# Timestamps further than this from our clock are refused (replays of old captures, and senders
# whose clock is so wrong that a replay window could not be kept).
TOLERANCE_SECONDS = 5 * 60


class SignatureError(Exception):
    """The request is not signed as its connector requires; the message says what failed."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The key bytes of a `whsec_` secret; ValueError naming what is wrong (not the secret)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with 'whsec_'")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("a webhook secret's key is 24 to 64 bytes")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<signature>` of one message with one secret."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def standard_headers(
    secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_, msg_id, timestamp, body),
        "Content-Type": "application/json",
    }


@dataclass(frozen=True)
class Verified:
    """A verified inbound message: the sender's id for it, and the scheme that verified it."""

    webhook_id: str
    scheme: str
    timestamp: int | None


def _check_time(timestamp: str, now: datetime, what: str) -> int:
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError(f"{what} is not a Unix timestamp") from None
    skew = abs(now.timestamp() - ts)
    if skew > TOLERANCE_SECONDS:
        raise SignatureError(
            f"{what} is {int(skew)} s away from the server's clock; at most "
            f"{TOLERANCE_SECONDS} s is accepted"
        )
    return ts


def verify_standard(
    secret: str, headers: Mapping[str, str], body: bytes, now: datetime
) -> Verified:
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (msg_id and timestamp and signatures):
        raise SignatureError(
            "missing Standard Webhooks headers (webhook-id, webhook-timestamp, webhook-signature)"
        )
    ts = _check_time(timestamp, now, "webhook-timestamp")
    expected = sign(secret, msg_id, ts, body).removeprefix("v1,")
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return Verified(msg_id, "standard", ts)
    raise SignatureError("no webhook-signature matches the connector's secret")


def verify_github(secret: str, headers: Mapping[str, str], body: bytes) -> Verified:
    """`X-Hub-Signature-256: sha256=<hex HMAC of the body>`; the id is `X-GitHub-Delivery`.
    GitHub signs no timestamp: replays are refused by id only."""
    given = headers.get("x-hub-signature-256", "")
    delivery = headers.get("x-github-delivery", "")
    if not given.startswith("sha256=") or not delivery:
        raise SignatureError("missing X-Hub-Signature-256 (sha256=...) or X-GitHub-Delivery")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.removeprefix("sha256="), expected):
        raise SignatureError("X-Hub-Signature-256 does not match the connector's secret")
    return Verified(delivery, "github", None)


def verify_stripe(
    secret: str, headers: Mapping[str, str], body: bytes, now: datetime, event_id: str
) -> Verified:
    """`Stripe-Signature: t=<unix>,v1=<hex HMAC of "t.body">[,v1=...]`; the id is the event's."""
    parts: dict[str, list[str]] = {}
    for item in headers.get("stripe-signature", "").split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    if "t" not in parts or "v1" not in parts:
        raise SignatureError("missing Stripe-Signature (t=...,v1=...)")
    ts = _check_time(parts["t"][0], now, "Stripe-Signature t")
    expected = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(v, expected) for v in parts["v1"]):
        raise SignatureError("Stripe-Signature does not match the connector's secret")
    if not event_id:
        raise SignatureError("the Stripe event has no id")
    return Verified(event_id, "stripe", ts)

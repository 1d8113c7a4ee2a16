"""Webhooks in: a request to a connector's inbound URL is verified against the connector's
secret (`inbound_secret`, in the secret store) by its scheme (`inbound_scheme`: standard, github
or stripe), refused when its timestamp is outside ±5 minutes or its id was accepted before, and
published as `integration.webhook_received` with the verified payload — the id and the event
commit in one transaction, so a replay racing the original cannot publish twice."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
from edrs_core import AlreadyExists, FailedPrecondition, Unauthenticated
from edrs_core.events import ServiceEvents
from edrs_core.ids import new_id
from edrs_integration.store import Connector, ConnectorStore
from edrs_integration.webhooks.signing import (
    SignatureError,
    Verified,
    verify_github,
    verify_standard,
    verify_stripe,
)

log = logging.getLogger("edrs.integration.inbound")

SECRET_KEY = "inbound_secret"
SCHEME_KEY = "inbound_scheme"
SCHEMES = ("standard", "github", "stripe")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def verify(
    scheme: str, secret: str, headers: Mapping[str, str], body: bytes, now: datetime
) -> Verified:
    if scheme == "github":
        return verify_github(secret, headers, body)
    if scheme == "stripe":
        parsed = _json(body)
        event_id = str(parsed.get("id", "")) if isinstance(parsed, dict) else ""
        return verify_stripe(secret, headers, body, now, event_id)
    return verify_standard(secret, headers, body, now)


def _topic(scheme: str, headers: Mapping[str, str], payload: Any) -> str:
    if scheme == "github":
        return headers.get("x-github-event", "")
    if isinstance(payload, dict):
        return str(payload.get("type", ""))
    return ""


class InboundWebhooks:
    def __init__(self, db: asyncpg.Pool, connectors: ConnectorStore, events: ServiceEvents) -> None:
        self.db = db
        self.connectors = connectors
        self.events = events

    async def receive(
        self,
        client_id: str,
        connector: Connector,
        headers: Mapping[str, str],
        body: bytes,
        now: datetime,
    ) -> tuple[str, str]:
        """(the sender's webhook id, our event id); Unauthenticated, AlreadyExists or
        FailedPrecondition saying why it was refused."""
        if SECRET_KEY not in connector.secret_keys:
            raise FailedPrecondition(
                f"connector {connector.id} takes no inbound webhooks: give it an "
                f"'{SECRET_KEY}' (and '{SCHEME_KEY}': {', '.join(SCHEMES)})"
            )
        if not connector.enabled:
            raise FailedPrecondition(f"connector {connector.id} is disabled")
        scheme = connector.config.get(SCHEME_KEY, "standard")
        secret = (await self.connectors.secret_values(connector)).get(SECRET_KEY, "")
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            verified = verify(scheme, secret, lowered, body, now)
        except SignatureError as exc:
            log.info("inbound webhook for connector %s refused: %s", connector.id, exc)
            raise Unauthenticated(f"webhook refused: {exc}") from None
        except ValueError as exc:  # the stored secret is not a whsec_ secret
            raise FailedPrecondition(f"connector {connector.id}: {SECRET_KEY}: {exc}") from None
        payload = _json(body)
        async with self.db.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                """INSERT INTO inbound_webhook_ids (client_id, connector_id, webhook_id, received_at)
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING webhook_id""",
                client_id,
                connector.id,
                verified.webhook_id[:200],
                now,
            )
            if fresh is None:
                log.info("inbound webhook for connector %s refused: id seen before", connector.id)
                raise AlreadyExists(
                    f"webhook {verified.webhook_id[:200]!r} was already received (a replay)"
                )
            event_payload: dict[str, Any] = {
                "webhook_id": verified.webhook_id[:200],
                "connector_id": str(connector.id),
                "delivery_id": str(new_id()),
                "scheme": verified.scheme,
                "payload": payload
                if payload is not None
                else {"text": body.decode("utf-8", "replace")},
            }
            topic = _topic(scheme, lowered, payload)
            if topic:
                event_payload["topic"] = topic[:200]
            event = await self.events.add(
                conn,
                "integration.webhook_received",
                event_payload,
                aggregate_id=str(connector.id),
            )
        return verified.webhook_id, str(event.event_id)

"""Calls through a tenant's connectors: the one place that turns a stored connector (its URL, its
credentials from the secret store) into a request. Every request goes through the outbound client,
so the operator's policy applies to connector URLs, token endpoints and SMTP hosts alike.

    calls = ConnectorCalls(connectors, client, outbound, clock)
    status, body = await calls.request(client_id, connector_id, method="GET", path="/orders",
                                       query={}, body=None, timeout_seconds=10)

`request` is the `ConnectorRequests` port of the tool registry (tools/builtin.py): the tools call
it, and never see a credential. REST auth types (config `auth`): `none`, `api_key` (secret
`api_key`, sent in the header `api_key_header`, default `X-API-Key`), `bearer` (secret `token`),
`oauth2_client_credentials` (`token_url`, `client_id`, secret `client_secret`, optional `scope`;
the token is cached per connector and credential version, fetched once for all concurrent
callers and again once when it expires or the API answers 401).
"""

from __future__ import annotations

import asyncio
import json
import logging
import smtplib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlencode, urlsplit
from uuid import UUID

from edrs_core import FailedPrecondition, InvalidArgument, NotFound
from edrs_core.clock import Clock
from edrs_core.outbound import (
    OutboundClient,
    OutboundError,
    OutboundLimits,
    OutboundPolicy,
    OutboundResponse,
    system_resolver,
)

from edrs_integration.store import Connector, ConnectorStore

log = logging.getLogger("edrs.integration.connectors")

AUTH_TYPES = ("none", "api_key", "bearer", "oauth2_client_credentials")
SMTP_SECURITY = ("starttls", "tls", "none")
# A token is renewed this long before the expiry its endpoint announced.
TOKEN_MARGIN = timedelta(seconds=30)
DEFAULT_TOKEN_LIFETIME = timedelta(minutes=5)
RESPONSE_TEXT_MAX = 100_000


class _PinnedSMTP(smtplib.SMTP):
    """smtplib's client, connecting to an address the outbound policy checked rather than
    resolving the name again (no DNS rebinding between the check and the connection)."""

    pinned_address = ""

    def _get_socket(self, host: str, port: int, timeout: float) -> Any:
        return super()._get_socket(self.pinned_address or host, port, timeout)  # type: ignore[misc]


class _PinnedSMTPSSL(smtplib.SMTP_SSL, _PinnedSMTP):
    pass


class ConnectorCallError(FailedPrecondition):
    """A call through a connector failed before an answer came (refused by the outbound policy,
    unreachable, no token); the message has no secret. FAILED_PRECONDITION on the wire: the
    connector's settings or its far end need fixing."""


@dataclass
class _Token:
    value: str
    expires_at: datetime


@dataclass(frozen=True)
class TestResult:
    ok: bool
    detail: str
    status_code: int
    latency_ms: int


def _join(base: str, path: str, query: Mapping[str, str]) -> str:
    """`path` under the connector's base URL; a path that would leave it is refused."""
    if not path.startswith("/") or path.startswith("//"):
        raise InvalidArgument("path must start with a single '/'", field="path")
    if any(seg in ("..", ".") for seg in path.split("?")[0].split("/")) or "#" in path:
        raise InvalidArgument("path may not contain '.', '..' segments or a fragment", field="path")
    url = base.rstrip("/") + path
    if query:
        url += ("&" if "?" in url else "?") + urlencode(dict(query))
    return url


class ConnectorCalls:
    def __init__(
        self,
        connectors: ConnectorStore,
        client: OutboundClient,
        outbound: OutboundPolicy,
        clock: Clock,
    ) -> None:
        self.connectors = connectors
        self.client = client
        self.outbound = outbound
        self.clock = clock
        self._tokens: dict[tuple[UUID, int | None], _Token] = {}
        self._token_locks: dict[UUID, asyncio.Lock] = {}
        self.token_fetches = 0
        """Tokens fetched from token endpoints since start (observability and tests)."""

    async def _connector(self, client_id: str, connector_id: UUID, kind: str) -> Connector:
        connector = await self.connectors.get(client_id, connector_id)
        if connector is None:
            raise NotFound(f"connector {connector_id} not found")
        if connector.kind != kind:
            raise FailedPrecondition(f"connector {connector_id} is a {connector.kind} connector")
        if not connector.enabled:
            raise FailedPrecondition(f"connector {connector_id} is disabled")
        return connector

    # -- REST ---------------------------------------------------------------------------------

    async def request(
        self,
        client_id: str,
        connector_id: UUID,
        *,
        method: str,
        path: str,
        query: Mapping[str, str],
        body: Any,
        timeout_seconds: float,
    ) -> tuple[int, str]:
        """Send one request through an HTTP connector; (status, body text)."""
        connector = await self._connector(client_id, connector_id, "http")
        url = _join(connector.config.get("url", ""), path, query)
        content = None if body is None else json.dumps(body).encode()
        limits = OutboundLimits(
            max_redirects=self.client.limits.max_redirects,
            max_response_bytes=self.client.limits.max_response_bytes,
            timeout_seconds=timeout_seconds,
            connect_timeout_seconds=min(
                self.client.limits.connect_timeout_seconds, timeout_seconds
            ),
        )
        response = await self._send(connector, method, url, content, limits)
        return response.status, response.text()[:RESPONSE_TEXT_MAX]

    async def _send(
        self,
        connector: Connector,
        method: str,
        url: str,
        content: bytes | None,
        limits: OutboundLimits | None = None,
    ) -> OutboundResponse:
        auth = connector.config.get("auth", "none")
        for attempt in (1, 2):
            headers = {"Accept": "application/json"}
            if content is not None:
                headers["Content-Type"] = "application/json"
            headers.update(await self._auth_headers(connector, auth))
            try:
                response = await self.client.request(
                    method, url, headers=headers, content=content, truncate=True, limits=limits
                )
            except OutboundError as exc:
                raise ConnectorCallError(f"connector {connector.name!r}: {exc}") from None
            # An OAuth2 token the API no longer takes (revoked, expired early): fetch one more.
            if response.status == 401 and auth == "oauth2_client_credentials" and attempt == 1:
                self._tokens.pop((connector.id, connector.secret_version), None)
                continue
            return response
        raise AssertionError("unreachable")

    async def _auth_headers(self, connector: Connector, auth: str) -> dict[str, str]:
        if auth == "none":
            return {}
        secrets = await self.connectors.secret_values(connector)
        if auth == "api_key":
            return {connector.config.get("api_key_header", "X-API-Key"): secrets.get("api_key", "")}
        if auth == "bearer":
            return {"Authorization": f"Bearer {secrets.get('token', '')}"}
        if auth == "oauth2_client_credentials":
            return {"Authorization": f"Bearer {await self._oauth2_token(connector, secrets)}"}
        raise FailedPrecondition(f"connector {connector.id} has an unknown auth type {auth!r}")

    async def _oauth2_token(self, connector: Connector, secrets: Mapping[str, str]) -> str:
        key = (connector.id, connector.secret_version)
        cached = self._tokens.get(key)
        if cached is not None and self.clock.now() < cached.expires_at:
            return cached.value
        # One fetch for every caller waiting on this connector: they find the token after it.
        lock = self._token_locks.setdefault(connector.id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and self.clock.now() < cached.expires_at:
                return cached.value
            token = await self._fetch_token(connector, secrets)
            # Tokens of an older credential version are useless now.
            for old in [k for k in self._tokens if k[0] == connector.id]:
                del self._tokens[old]
            self._tokens[key] = token
            return token.value

    async def _fetch_token(self, connector: Connector, secrets: Mapping[str, str]) -> _Token:
        form = {
            "grant_type": "client_credentials",
            "client_id": connector.config.get("client_id", ""),
            "client_secret": secrets.get("client_secret", ""),
        }
        if connector.config.get("scope"):
            form["scope"] = connector.config["scope"]
        now = self.clock.now()
        self.token_fetches += 1
        try:
            response = await self.client.post(
                connector.config.get("token_url", ""),
                content=urlencode(form).encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
                follow_redirects=False,
            )
        except OutboundError as exc:
            raise ConnectorCallError(f"token endpoint of {connector.name!r}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status != 200 or not isinstance(data, dict) or "access_token" not in data:
            # The endpoint's error code only (RFC 6749 `error`), never its body: it may echo input.
            code = data.get("error", "") if isinstance(data, dict) else ""
            raise ConnectorCallError(
                f"token endpoint of {connector.name!r} answered HTTP {response.status}"
                + (f" ({str(code)[:100]})" if code else "")
            )
        lifetime = DEFAULT_TOKEN_LIFETIME
        if isinstance(data.get("expires_in"), int | float) and data["expires_in"] > 0:
            lifetime = timedelta(seconds=float(data["expires_in"]))
        log.info("OAuth2 token fetched for connector %s", connector.id)
        return _Token(str(data["access_token"]), now + max(lifetime - TOKEN_MARGIN, lifetime / 2))

    # -- SMTP -----------------------------------------------------------------------------------

    async def _smtp_target(self, connector: Connector) -> tuple[str, str, int]:
        host = connector.config.get("host", "")
        port = int(connector.config.get("port", "587"))
        # The same policy as HTTP: the name's text, then every address it resolves to; the
        # connection goes to the checked address (pinned), never to the name again.
        try:
            self.outbound.check_url(f"http://{host}:{port}/")
            addresses = await system_resolver(host, port)
            self.outbound.check_addresses(host, addresses)
        except OutboundError as exc:
            raise ConnectorCallError(f"SMTP host: {exc.reason}") from None
        return host, str(addresses[0]), port

    def _smtp_session(
        self, connector: Connector, host: str, address: str, port: int, password: str
    ) -> smtplib.SMTP:
        security = connector.config.get("security", "starttls")
        timeout = self.client.limits.timeout_seconds
        context = ssl.create_default_context()
        smtp: _PinnedSMTP | _PinnedSMTPSSL
        if security == "tls":
            smtp = _PinnedSMTPSSL(timeout=timeout, context=context)
        else:
            smtp = _PinnedSMTP(timeout=timeout)
        # TLS verifies the certificate against the name; the socket goes to the checked address.
        smtp._host = host  # type: ignore[attr-defined]
        smtp.pinned_address = address
        smtp.connect(host, port)
        smtp.ehlo()
        if security == "starttls":
            smtp.starttls(context=context)
            smtp.ehlo()
        username = connector.config.get("username", "")
        if username:
            smtp.login(username, password)
        return smtp

    async def send_email(
        self,
        client_id: str,
        connector_id: UUID,
        *,
        to: list[str],
        subject: str,
        text: str,
    ) -> str:
        """Send a plain-text email through an SMTP connector; returns the Message-ID."""
        connector = await self._connector(client_id, connector_id, "smtp")
        host, address, port = await self._smtp_target(connector)
        password = (await self.connectors.secret_values(connector)).get("password", "")
        message = EmailMessage()
        message["From"] = connector.config.get("from_address", "")
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message["Message-ID"] = f"<{UUID(int=int(time.time_ns()))}@edrs>"
        message.set_content(text)

        def send() -> None:
            smtp = self._smtp_session(connector, host, address, port, password)
            try:
                smtp.send_message(message)
            finally:
                smtp.quit()

        try:
            await asyncio.to_thread(send)
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectorCallError(f"SMTP: {_smtp_reason(exc)}") from None
        return str(message["Message-ID"])

    # -- test connection ------------------------------------------------------------------------

    async def test(self, client_id: str, connector_id: UUID) -> TestResult:
        connector = await self.connectors.get(client_id, connector_id)
        if connector is None:
            raise NotFound(f"connector {connector_id} not found")
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        if connector.kind == "http":
            url = _join(connector.config.get("url", ""), connector.config.get("test_path", "/"), {})
            try:
                response = await self._send(connector, "GET", url, None)
            except ConnectorCallError as exc:
                return TestResult(False, str(exc), 0, took())
            ok = 200 <= response.status < 400
            return TestResult(ok, f"HTTP {response.status} in {took()} ms", response.status, took())
        if connector.kind == "smtp":
            try:
                host, address, port = await self._smtp_target(connector)
                password = (await self.connectors.secret_values(connector)).get("password", "")

                def check() -> int:
                    smtp = self._smtp_session(connector, host, address, port, password)
                    code, _ = smtp.noop()
                    smtp.quit()
                    return int(code)

                code = await asyncio.to_thread(check)
            except ConnectorCallError as exc:
                return TestResult(False, str(exc), 0, took())
            except (smtplib.SMTPException, OSError) as exc:
                return TestResult(False, f"SMTP: {_smtp_reason(exc)}", _smtp_code(exc), took())
            return TestResult(True, f"SMTP {code} in {took()} ms", code, took())
        raise FailedPrecondition(
            f"connector {connector_id} is a {connector.kind} connector; only http and smtp "
            "connectors can be tested"
        )


def _smtp_code(exc: BaseException) -> int:
    code = getattr(exc, "smtp_code", 0)
    return int(code) if isinstance(code, int) else 0


def _smtp_reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"login refused ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the server answered {exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "every recipient was refused"
    return type(exc).__name__


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""

"""A real identity issuer for tests: it stands in for the gateway's token signing (an Ed25519 key and
a fleet JWKS served over HTTP), so services under test verify real signed tokens the way they do in
the fleet. Not a bypass: the services trust it only because their settings name its JWKS URL."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edrs_core.identity import (
    AUTHORIZATION_KEY,
    OPERATOR_ROLE,
    ServiceTokens,
    bearer,
    identity_claims,
    private_key_pem,
    public_jwk,
    service_kid,
    sign,
)

ISSUER = "edrs-gateway"
AUDIENCE = "edrs-fleet"
# Long enough that tokens made when a test module is imported outlive the whole session.
TOKEN_TTL_SECONDS = 6 * 3600


class TestIssuer:
    """Signs identity tokens with a test key and serves the JWKS that verifies them, plus the
    public keys of every service key it handed out and of any JWKS it was told to trust (a gateway
    under test, whose own keys sign the tokens it forwards)."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.kid = "test-" + self.key.public_key().public_bytes_raw()[:6].hex()
        self._service_keys: dict[str, Ed25519PrivateKey] = {}
        self._upstreams: list[str] = []
        self._lock = threading.Lock()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps(issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="test-jwks").start()

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/fleet-jwks.json"

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        keys = [public_jwk(self.kid, self.key.public_key())]
        with self._lock:
            services = dict(self._service_keys)
            upstreams = list(self._upstreams)
        for name, key in services.items():
            keys.append(
                public_jwk(service_kid(name, key.public_key()), key.public_key(), service=name)
            )
        for url in upstreams:
            try:
                keys += httpx.get(url, timeout=5).json()["keys"]
            except (httpx.HTTPError, ValueError, KeyError):
                continue  # a gateway that stopped: its keys are simply no longer trusted
        return {"keys": keys}

    def trust(self, jwks_url: str) -> None:
        """Also publish the keys of `jwks_url` (a gateway under test)."""
        with self._lock:
            self._upstreams.append(jwks_url)

    def distrust(self, jwks_url: str) -> None:
        with self._lock:
            if jwks_url in self._upstreams:
                self._upstreams.remove(jwks_url)

    def service_key_pem(self, service: str) -> str:
        """The private key a service under test signs its service tokens with (published here)."""
        with self._lock:
            key = self._service_keys.setdefault(service, Ed25519PrivateKey.generate())
        return private_key_pem(key)

    def token(
        self,
        tenant: str,
        *,
        subject: str = "test-user",
        role: str = "member",
        kind: str = "user",
        scopes: Sequence[str] = (),
        ttl_seconds: float = TOKEN_TTL_SECONDS,
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        key: Ed25519PrivateKey | None = None,
    ) -> str:
        """A signed identity token, as the gateway forwards one. `key` signs instead of the
        issuer's own (under the issuer's kid): a forgery."""
        claims = identity_claims(
            issuer=issuer,
            audience=audience,
            subject=subject,
            tenant_id=tenant,
            role=role,
            kind=kind,
            ttl_seconds=ttl_seconds,
            scopes=frozenset(scopes),
        )
        return sign(claims, key or self.key, self.kid)

    def metadata(self, tenant: str, **claims: Any) -> list[tuple[str, str]]:
        """gRPC metadata carrying a token for `tenant` (see `token` for the claims)."""
        return [(AUTHORIZATION_KEY, bearer(self.token(tenant, **claims)))]

    def service_token_metadata(self, service: str, tenant: str) -> list[tuple[str, str]]:
        """A service token of `service` for `tenant`, signed with the key this issuer gave it."""
        with self._lock:
            key = self._service_keys.setdefault(service, Ed25519PrivateKey.generate())
        tokens = ServiceTokens(service, key, audience=AUDIENCE)
        return [(AUTHORIZATION_KEY, bearer(tokens.token_for(tenant)))]

    def operator_metadata(self) -> list[tuple[str, str]]:
        """The identity of an operator (`edrs admin`): no tenant, role `operator`."""
        return self.metadata("", subject="operator:test", role=OPERATOR_ROLE, kind="operator")

    def settings(self, service: str) -> dict[str, Any]:
        """The settings that make a service under test trust this issuer and sign service tokens
        with a key this issuer publishes."""
        return {
            "jwks_url": self.jwks_url,
            # Keys of gateways under test appear while other services run: fetch at once.
            "jwks_min_refresh_seconds": 0.0,
            "identity_issuer": ISSUER,
            "identity_audience": AUDIENCE,
            "service_key": self.service_key_pem(service),
        }


@functools.cache
def test_issuer() -> TestIssuer:
    """The test process's one issuer (its JWKS server starts on first use)."""
    return TestIssuer()


test_issuer.__test__ = False  # type: ignore[attr-defined]

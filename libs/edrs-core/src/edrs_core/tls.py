"""Mutual TLS between services, from three files named by settings: this service's certificate and
key, and the CA that signs every service's certificate (a mesh-less production option)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: `cert` and `key` present this service; `ca` is what a peer's certificate must
    chain to. The same files serve both sides: servers require a client certificate signed by the
    CA, and clients present theirs."""

    cert: Path
    key: Path
    ca: Path

    def _read(self) -> tuple[bytes, bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes()

    def server_credentials(self) -> grpc.ServerCredentials:
        cert, key, ca = self._read()
        return grpc.ssl_server_credentials(
            [(key, cert)], root_certificates=ca, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        cert, key, ca = self._read()
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )

    def client_context(self) -> ssl.SSLContext:
        """For HTTP calls to another service (the fleet JWKS): verify it, present ours."""
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

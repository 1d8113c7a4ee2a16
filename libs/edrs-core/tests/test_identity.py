"""Trust inside the fleet: every gRPC call must carry an identity token the service verifies against
the fleet JWKS before the handler runs; the tenant comes from it only. And mutual TLS by settings."""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from edrs_core import GrpcService, Runtime, ServiceDefinition, ServiceSettings, testing
from edrs_core.context import identity_var, request_context, require_client_id
from edrs_core.grpc_client import PeerChannels
from edrs_core.identity import (
    InvalidIdentity,
    JwksKeys,
    TokenVerifier,
    identity_claims,
    sign,
)
from edrs_core.tls import TlsFiles
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic_settings import SettingsConfigDict

pytestmark = pytest.mark.integration


class EchoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_ECHO_")
    service_name: ClassVar[str] = "echo"
    uses_redis: ClassVar[bool] = False


class Echo(persona_pb2_grpc.PersonaServiceServicer):
    """Answers with who the runtime says is calling: tenant in `id`, kind:subject:role in `name`.
    CreatePersona calls its peer `echo` (itself) as an event handler would: a tenant, no caller."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def GetPersona(self, request, context):  # noqa: N802
        who = identity_var.get()
        assert who is not None
        return persona_pb2.Persona(
            id=require_client_id(), name=f"{who.kind}:{who.subject}:{who.role}"
        )

    async def CreatePersona(self, request, context):  # noqa: N802
        token = identity_var.set(None)  # what the bus gives a handler: the event's tenant only
        try:
            with request_context(request.name, None):
                peer = persona_pb2_grpc.PersonaServiceStub(self.rt.peers.channel("echo"))
                return await peer.GetPersona(persona_pb2.GetPersonaRequest(id="x"))
        finally:
            identity_var.reset(token)


def build(rt: Runtime) -> list[GrpcService]:
    return [
        GrpcService(
            "edrs.persona.v1.PersonaService",
            Echo(rt),
            persona_pb2_grpc.add_PersonaServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(settings_cls=EchoSettings, build=build)


@pytest.fixture(scope="module")
async def echo(postgres_engine, nats_engine) -> AsyncIterator[testing.RunningService]:
    async with testing.running_service(
        definition,
        database_url=postgres_engine.url("test_identity_echo"),
        bus_url=nats_engine.url(),
    ) as svc:
        yield svc


@pytest.fixture
def stub(echo) -> persona_pb2_grpc.PersonaServiceStub:
    return persona_pb2_grpc.PersonaServiceStub(echo.channel)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


GET = persona_pb2.GetPersonaRequest(id="x")


async def test_the_tenant_subject_and_role_come_from_the_verified_token(stub) -> None:
    reply = await stub.GetPersona(GET, metadata=testing.tenant_metadata("tenant-a", role="admin"))
    assert (reply.id, reply.name) == ("tenant-a", "user:test-user:admin")
    # A tenant header beside the token changes nothing: only the token is believed.
    reply = await stub.GetPersona(
        GET,
        metadata=[*testing.tenant_metadata("tenant-a"), (testing.TENANT_HEADER, "tenant-b")],
    )
    assert reply.id == "tenant-a"


async def test_a_call_without_a_token_or_with_only_the_tenant_header_is_unauthenticated(
    stub,
) -> None:
    await testing.expect_refused_without_tenant(stub.GetPersona(GET))
    await testing.expect_rpc_error(
        stub.GetPersona(GET, metadata=[(testing.TENANT_HEADER, "tenant-a")]),
        grpc.StatusCode.UNAUTHENTICATED,
        "'x-edrs-client-id' is not trusted",
        "authorization: Bearer",
    )
    await testing.expect_rpc_error(
        stub.GetPersona(GET, metadata=[("authorization", "Basic dXNlcjpwYXNz")]),
        grpc.StatusCode.UNAUTHENTICATED,
        "must be 'Bearer <identity token>'",
    )


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"key": Ed25519PrivateKey.generate()}, "signature does not verify"),
        ({"ttl_seconds": -120}, "has expired"),
        ({"audience": "edrs-api"}, "for another audience"),
        ({"issuer": "someone-else"}, "issued by someone else"),
        ({"kind": "service"}, "must be signed by that service's key"),
    ],
    ids=["forged", "expired", "wrong-audience", "wrong-issuer", "service-kind-by-gateway-key"],
)
async def test_a_bad_token_is_unauthenticated_saying_why(stub, claims, reason) -> None:
    token = testing.test_issuer().token("tenant-a", **claims)
    await testing.expect_rpc_error(
        stub.GetPersona(GET, metadata=bearer(token)), grpc.StatusCode.UNAUTHENTICATED, reason
    )


async def test_tokens_of_unknown_keys_or_other_algorithms_are_refused(stub) -> None:
    claims = identity_claims(
        issuer="edrs-gateway",
        audience="edrs-fleet",
        subject="u",
        tenant_id="tenant-a",
        role="admin",
        kind="user",
        ttl_seconds=60,
    )
    unknown = sign(claims, Ed25519PrivateKey.generate(), f"made-up-{uuid.uuid4()}")
    hmac = jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": "x"})
    for token, reason in [
        (unknown, "unknown key"),
        (hmac, "algorithm must be EdDSA"),
        ("not-a-jwt", "not a well-formed JWT"),
    ]:
        await testing.expect_rpc_error(
            stub.GetPersona(GET, metadata=bearer(token)), grpc.StatusCode.UNAUTHENTICATED, reason
        )


async def test_a_service_key_speaks_only_for_its_own_service(stub) -> None:
    issuer = testing.test_issuer()
    reply = await stub.GetPersona(GET, metadata=issuer.service_token_metadata("memory", "t-1"))
    assert (reply.id, reply.name) == ("t-1", "service:memory:service")
    # memory's key signing a user's identity, or another service's, is refused.
    memory_key = serialization.load_pem_private_key(
        issuer.service_key_pem("memory").encode(), password=None
    )
    assert isinstance(memory_key, Ed25519PrivateKey)
    from edrs_core.identity import service_kid

    kid = service_kid("memory", memory_key.public_key())
    for subject, kind, role in [("u1", "user", "admin"), ("persona", "service", "service")]:
        claims = identity_claims(
            issuer="memory" if kind == "user" else "persona",
            audience="edrs-fleet",
            subject=subject,
            tenant_id="t-1",
            role=role,
            kind=kind,
            ttl_seconds=60,
        )
        await testing.expect_rpc_error(
            stub.GetPersona(GET, metadata=bearer(sign(claims, memory_key, kid))),
            grpc.StatusCode.UNAUTHENTICATED,
            "can only sign its own service token",
        )


async def test_work_of_no_user_reaches_a_peer_with_a_service_token_for_its_tenant(
    echo, stub
) -> None:
    # The handler drops the caller's identity and keeps a tenant, as an event handler runs.
    rt = echo.runner.runtime
    assert rt is not None
    rt.peers.peers["echo"] = echo.grpc_address
    reply = await stub.CreatePersona(
        persona_pb2.CreatePersonaRequest(name="tenant-from-event"),
        metadata=testing.tenant_metadata("tenant-a"),
    )
    assert (reply.id, reply.name) == ("tenant-from-event", "service:echo:service")


async def test_health_and_reflection_stay_open(echo) -> None:
    health = health_pb2_grpc.HealthStub(echo.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_jwks_is_cached_and_refetched_for_an_unknown_kid_at_a_bounded_rate() -> None:
    issuer = testing.test_issuer()
    keys = JwksKeys(issuer.jwks_url, cache_seconds=300, min_refresh_seconds=300)
    verifier = TokenVerifier(keys, issuer="edrs-gateway", audience="edrs-fleet")
    for _ in range(5):
        await verifier.verify(issuer.token("t"))
    assert keys.fetches == 1
    # A flood of made-up kids costs no fetch at all within min_refresh_seconds of the last one.
    for _ in range(20):
        claims = identity_claims(
            issuer="edrs-gateway",
            audience="edrs-fleet",
            subject="u",
            tenant_id="t",
            role="member",
            kind="user",
            ttl_seconds=60,
        )
        with pytest.raises(InvalidIdentity, match="unknown key"):
            await verifier.verify(sign(claims, Ed25519PrivateKey.generate(), uuid.uuid4().hex))
    assert keys.fetches == 1
    # A key published after the last fetch (a rotation) is found by refetching on its kid.
    eager = JwksKeys(issuer.jwks_url, cache_seconds=300, min_refresh_seconds=0)
    fresh = TokenVerifier(eager, issuer="edrs-gateway", audience="edrs-fleet")
    await fresh.verify(issuer.token("t"))
    rotated = issuer.service_token_metadata(f"svc{uuid.uuid4().hex[:6]}", "t")[0][1]
    identity = await fresh.verify(rotated.removeprefix("Bearer "))
    assert identity.kind == "service" and eager.fetches == 2


# --- mutual TLS ------------------------------------------------------------------------------


def _cert(
    subject: str, key: Any, issuer: tuple[x509.Name, Any] | None, *, ca: bool = False
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, TlsFiles]:
    """A CA, a certificate it signs for the service and one for a client; and a stranger's."""
    directory = tmp_path_factory.mktemp("tls")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("edrs test CA", ca_key, None, ca=True)
    ca_path = directory / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files = {}
    for name in ("service", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert_path, key_path = _write(directory, name, _cert(name, key, (ca.subject, ca_key)), key)
        files[name] = TlsFiles(cert_path, key_path, ca_path)
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = _write(
        directory, "stranger", _cert("stranger", stranger_key, None), stranger_key
    )
    files["stranger"] = TlsFiles(cert_path, key_path, ca_path)
    return files


async def test_a_service_with_certificates_serves_only_clients_with_one(
    postgres_engine, nats_engine, certificates
) -> None:
    own = certificates["service"]
    async with testing.running_service(
        definition,
        database_url=postgres_engine.url("test_identity_echo"),
        bus_url=nats_engine.url(),
        tls_cert_path=own.cert,
        tls_key_path=own.key,
        tls_ca_path=own.ca,
    ) as svc:
        address = svc.grpc_address
        metadata = testing.tenant_metadata("tenant-tls")
        # The runtime's own peer channels speak mutual TLS with the same settings.
        peers = PeerChannels("client", {"echo": address}, tls=certificates["client"])
        try:
            peer = persona_pb2_grpc.PersonaServiceStub(peers.channel("echo"))
            reply = await peer.GetPersona(GET, metadata=metadata)
            assert reply.id == "tenant-tls"
        finally:
            await peers.close()
        ca = own.ca.read_bytes()
        refused = [
            grpc.aio.insecure_channel(address),  # plaintext
            grpc.aio.secure_channel(address, grpc.ssl_channel_credentials(ca)),  # no certificate
            grpc.aio.secure_channel(address, certificates["stranger"].channel_credentials()),
        ]
        for channel in refused:
            async with channel:
                await testing.expect_rpc_error(
                    persona_pb2_grpc.PersonaServiceStub(channel).GetPersona(
                        GET, metadata=metadata, timeout=10
                    ),
                    grpc.StatusCode.UNAVAILABLE,
                )
        # The HTTP port speaks TLS too (the JWKS fetch between services goes over it).
        import httpx
        from edrs_core.testing import HTTP_TIMEOUT

        async with httpx.AsyncClient(
            timeout=HTTP_TIMEOUT, verify=certificates["client"].client_context()
        ) as client:
            reply_http = await client.get(
                f"https://127.0.0.1:{svc.runner.servers[1].port}/health/liveness"
            )
        assert reply_http.status_code == 200

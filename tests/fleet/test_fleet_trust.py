"""Trust inside the fleet `make run` starts: no gRPC port of the eight services believes a caller who
cannot show a signed identity, while the same calls made through the gateway work."""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from edrs_core.identity import identity_claims, sign
from edrs_core.testing import expect_rpc_error
from edrs_proto.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from edrs_proto.integration.v1 import integration_pb2, integration_pb2_grpc
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

Call = Callable[[grpc.aio.Channel, list[tuple[str, str]]], Awaitable[Any]]

# One tenant-scoped read per service (the gateway's gRPC port serves tenant administration).
CALLS: dict[str, Call] = {
    "gateway": lambda ch, md: gateway_pb2_grpc.TenantServiceStub(ch).ListTenants(
        gateway_pb2.ListTenantsRequest(), metadata=md, timeout=10
    ),
    "persona": lambda ch, md: persona_pb2_grpc.PersonaServiceStub(ch).ListPersonas(
        persona_pb2.ListPersonasRequest(), metadata=md, timeout=10
    ),
    "memory": lambda ch, md: memory_pb2_grpc.MemoryServiceStub(ch).ListFacts(
        memory_pb2.ListFactsRequest(persona_id=str(uuid.uuid4()), user_id="u1"),
        metadata=md,
        timeout=10,
    ),
    "knowledge": lambda ch, md: knowledge_pb2_grpc.KnowledgeServiceStub(ch).Search(
        knowledge_pb2.SearchRequest(query="expenses", k=1), metadata=md, timeout=10
    ),
    "reasoning": lambda ch, md: reasoning_pb2_grpc.ReasoningServiceStub(ch).ListTraces(
        reasoning_pb2.ListTracesRequest(), metadata=md, timeout=10
    ),
    "task": lambda ch, md: task_pb2_grpc.TaskServiceStub(ch).ListTasks(
        task_pb2.ListTasksRequest(), metadata=md, timeout=10
    ),
    "research": lambda ch, md: research_pb2_grpc.ResearchServiceStub(ch).ListSources(
        research_pb2.ListSourcesRequest(), metadata=md, timeout=10
    ),
    "integration": lambda ch, md: integration_pb2_grpc.IntegrationServiceStub(ch).ListConnectors(
        integration_pb2.ListConnectorsRequest(), metadata=md, timeout=10
    ),
}


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def gateway_kid(fleet) -> str:
    """The kid of the gateway's signing key, from the fleet JWKS every service trusts."""
    keys = httpx.get(f"{fleet.gateway_url}/api/v1/.well-known/fleet-jwks.json", timeout=30).json()
    return next(k["kid"] for k in keys["keys"] if "edrs_service" not in k)


@pytest.fixture(scope="module")
def admin(fleet) -> dict[str, str]:
    """An admin's access token for a new tenant (`edrs admin create-tenant`, then a login)."""
    password = secrets.token_urlsafe(16)
    made = fleet.edrs_in_fleet(
        "admin", "create-tenant", f"Trust {secrets.token_hex(3)}",
        "--admin-email", "admin@trust.example", "--password-stdin", input=f"{password}\n",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    tenant_id = re.search(r"^id: (\S+)$", made.stdout, re.MULTILINE)
    assert tenant_id is not None, made.stdout
    reply = httpx.post(
        f"{fleet.gateway_url}/api/v1/auth/token",
        json={"grantType": "password", "tenantId": tenant_id[1],
              "email": "admin@trust.example", "password": password},
        timeout=30,
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    return {"Authorization": f"Bearer {reply.json()['accessToken']}"}


@pytest.mark.parametrize("service", list(CALLS))
async def test_no_port_believes_a_caller_without_a_valid_identity(
    fleet, gateway_kid, admin, service
) -> None:
    claims = identity_claims(
        issuer="edrs-gateway",
        audience="edrs-fleet",
        subject="mallory",
        tenant_id="victim-tenant",
        role="operator" if service == "gateway" else "admin",
        kind="operator" if service == "gateway" else "user",
        ttl_seconds=300,
    )
    forged = sign(claims, Ed25519PrivateKey.generate(), gateway_kid)
    # A genuine service token, but long expired.
    expired_service = fleet.service_metadata("victim-tenant")[0][1].removeprefix("Bearer ")
    payload = jwt.decode(expired_service, options={"verify_signature": False})
    assert payload["tid"] == "victim-tenant"
    expired = _resigned_expired(fleet, payload)
    # The caller's public access token is not a fleet identity (another audience).
    access_token = admin["Authorization"].removeprefix("Bearer ")
    attempts: list[tuple[list[tuple[str, str]], str]] = [
        ([], "no identity token"),
        ([("x-edrs-client-id", "victim-tenant")], "'x-edrs-client-id' is not trusted"),
        (bearer(forged), "signature does not verify"),
        (bearer(expired), "has expired"),
        (bearer(access_token), "another audience"),
    ]
    async with grpc.aio.insecure_channel(fleet.grpc_address(service)) as channel:
        for metadata, reason in attempts:
            await expect_rpc_error(
                CALLS[service](channel, metadata), grpc.StatusCode.UNAUTHENTICATED, reason
            )


def _resigned_expired(fleet, payload: dict[str, Any]) -> str:
    """The `task` service's token for the same tenant, signed with its real key, expired."""
    import json

    from edrs_cli.fleet import SERVICE_KEYS_FILE
    from edrs_core.identity import load_private_key, service_kid

    keys = json.loads((fleet.state_dir / SERVICE_KEYS_FILE).read_text())
    key = load_private_key(keys["task"], "task")
    claims = {**payload, "iat": payload["iat"] - 7200, "nbf": payload["iat"] - 7200}
    claims["exp"] = payload["iat"] - 3600
    return sign(claims, key, service_kid("task", key.public_key()))


async def test_valid_identities_are_served_and_the_tenant_comes_from_them(fleet) -> None:
    """A genuine service token is served by every tenant-scoped port; tenant administration
    needs an operator's token, not a service's."""
    metadata = fleet.service_metadata(f"tenant-{secrets.token_hex(3)}")
    for service, call in CALLS.items():
        async with grpc.aio.insecure_channel(fleet.grpc_address(service)) as channel:
            if service == "gateway":
                await expect_rpc_error(
                    call(channel, metadata), grpc.StatusCode.PERMISSION_DENIED, "operator"
                )
                listed = await call(channel, fleet.operator_metadata())
                assert len(listed.tenants) >= 1
            else:
                await call(channel, metadata)


async def test_the_same_calls_through_the_gateway_work(fleet, admin) -> None:
    async with httpx.AsyncClient(base_url=f"{fleet.gateway_url}/api/v1", timeout=60) as client:
        made = await client.post(
            "/personas", json={"name": "Trusty", "role": "Analyst"}, headers=admin
        )
        assert made.status_code == 201, made.text
        persona_id = made.json()["id"]
        listed = await client.get("/personas", headers=admin)  # persona's ListPersonas
        assert listed.status_code == 200, listed.text
        assert persona_id in [p["id"] for p in listed.json()["personas"]]
        memories = await client.get(f"/personas/{persona_id}/memories", headers=admin)
        assert memories.status_code == 200, memories.text  # memory's Recall
        traces = await client.get("/traces", headers=admin)  # reasoning's ListTraces
        assert traces.status_code == 200, traces.text

"""`/api/v1/.well-known/jwks.json`: the public keys that verify the gateway's access tokens; and
`/api/v1/.well-known/fleet-jwks.json`: the keys services verify identity tokens with."""

from __future__ import annotations

from typing import Any

from edrs_core.identity import load_public_key, public_jwk, service_kid
from fastapi import APIRouter, Response

from edrs_gateway.api.common import problem_responses
from edrs_gateway.context import Ctx

router = APIRouter(tags=["auth"])

# Verifiers may cache the set this long; one that meets an unknown kid should fetch it again.
_MAX_AGE_SECONDS = 300


@router.get(
    "/.well-known/jwks.json",
    summary="Token signing keys (JWKS)",
    description="Every key that currently verifies access tokens (EdDSA, Ed25519), newest first. "
    "Public and cacheable; a token's `kid` header names its key.",
    responses={
        200: {
            "content": {
                "application/json": {
                    "example": {
                        "keys": [
                            {
                                "kty": "OKP",
                                "crv": "Ed25519",
                                "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                                "kid": "k190d6a0000-1a2b3c4d",
                                "alg": "EdDSA",
                                "use": "sig",
                            }
                        ]
                    }
                }
            }
        },
        **problem_responses(429),
    },
)
async def jwks(response: Response, ctx: Ctx) -> dict[str, list[dict[str, Any]]]:
    response.headers["Cache-Control"] = f"public, max-age={_MAX_AGE_SECONDS}"
    return {"keys": await ctx.signing_keys.public_jwks()}


@router.get(
    "/.well-known/fleet-jwks.json",
    summary="Fleet identity keys (JWKS)",
    description="The keys services verify the identity token of every gRPC call with: the "
    "gateway's signing keys (the identities it forwards for callers, and operator tokens) and "
    "each service's own key (its service tokens), which carries an `edrs_service` member naming "
    "the only service it may speak for. Public keys only; not for verifying access tokens.",
    responses={**problem_responses(429)},
)
async def fleet_jwks(response: Response, ctx: Ctx) -> dict[str, list[dict[str, Any]]]:
    response.headers["Cache-Control"] = f"public, max-age={_MAX_AGE_SECONDS}"
    keys = await ctx.signing_keys.public_jwks()
    for service, texts in ctx.settings.service_public_keys().items():
        for text in texts:
            key = load_public_key(text, f"EDRS_GATEWAY_SERVICE_KEYS[{service}]")
            keys.append(public_jwk(service_kid(service, key), key, service=service))
    return {"keys": keys}

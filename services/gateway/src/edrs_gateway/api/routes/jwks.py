"""`/api/v1/.well-known/jwks.json`: the public keys that verify the gateway's access tokens."""

from __future__ import annotations

from typing import Any

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

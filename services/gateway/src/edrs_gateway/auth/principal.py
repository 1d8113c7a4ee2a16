"""The authenticated caller every route receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["admin", "member", "integrator", "viewer"]
Tier = Literal["standard", "professional", "enterprise"]


@dataclass(frozen=True)
class Principal:
    """A verified access token's subject. `tenant_id` scopes every downstream call."""

    tenant_id: str
    tier: Tier
    subject_id: str
    subject_kind: Literal["user", "api_key"]
    role: Role
    scopes: frozenset[str] = field(default_factory=frozenset)
    token_id: str = ""

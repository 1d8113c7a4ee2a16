"""Tenant name rules, without I/O."""

from __future__ import annotations

import pytest
from edrs_core import InvalidArgument
from edrs_gateway.tenants import tenant_name


@pytest.mark.parametrize(
    "name", ["Acme", "acme-corp_2.0", "Société Générale", "株式会社 テスト", "a" * 200]
)
def test_accepts_letters_digits_space_dash_underscore_dot(name: str) -> None:
    assert tenant_name(name) == name


def test_strips_surrounding_space() -> None:
    assert tenant_name("  Acme  ") == "Acme"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "name is required"),
        ("a" * 201, "name is 201 characters long"),
        ("Acme/Evil", "found '/'"),
        ("<script>", "found '<>'"),
        ("tab\there", "found '\\t'"),
    ],
)
def test_refuses_with_a_message_naming_the_field(name: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        tenant_name(name)
    assert err.value.field == "name"
    assert reason in err.value.message

"""Rules for tenant names: what an operator may call a tenant."""

from __future__ import annotations

import re

from edrs_core import validation
from edrs_core.errors import InvalidArgument

NAME_MAX_LENGTH = 200
# \w is Unicode-aware in Python 3 str patterns: letters and digits of any script, plus "_".
_NAME_CHARACTERS = re.compile(r"[\w .-]+")


def tenant_name(value: str, field: str = "name") -> str:
    """`value` stripped, 1..200 characters of letters, digits, space, "-", "_" and "."."""
    name = validation.text(value, field, max_length=NAME_MAX_LENGTH)
    if not _NAME_CHARACTERS.fullmatch(name):
        bad = sorted({c for c in name if not _NAME_CHARACTERS.fullmatch(c)})
        raise InvalidArgument(
            f"{field} may contain only letters, digits, spaces, '-', '_' and '.'; "
            f"found {''.join(bad)!r}",
            field=field,
        )
    return name

"""`edrs` reaches the gateway only through its API and its own admin command: edrs-cli neither
imports the gateway's code nor depends on its package (issue 9: `edrs admin` belongs to the
gateway, and `edrs chat` reads no database)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
SOURCES = sorted((PACKAGE / "src").rglob("*.py"))


def test_no_source_of_edrs_cli_imports_the_gateway_or_a_database_driver() -> None:
    assert SOURCES
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in SOURCES
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"^\s*(from|import)\s+(edrs_gateway|asyncpg|psycopg)\b", line)
    ]
    assert offenders == []


def test_edrs_cli_does_not_depend_on_the_gateway_package() -> None:
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    names = {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements}
    assert "edrs-gateway" not in names
    assert not {"asyncpg", "psycopg"} & names

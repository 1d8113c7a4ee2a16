"""docs/events.md documents every event type of the catalog (where the repository is present)."""

from pathlib import Path

import pytest
from edrs_events import default_catalog

DOC = Path(__file__).resolve().parents[3] / "docs" / "events.md"


@pytest.mark.skipif(not DOC.exists(), reason="docs/events.md is not shipped with the package")
def test_every_catalog_type_is_documented_with_its_owner() -> None:
    text = DOC.read_text()
    for entry in default_catalog():
        assert f"| `{entry.name}` | {entry.owner} |" in text, f"{entry.name} missing from {DOC}"

"""Every event type of the catalog is published by its owner: a type nobody produces promises
integrators an event that never comes (docs/events.md, "the catalog")."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from edrs_events import default_catalog

# Types published for their owner by another part of the fleet (none today: the integration
# service publishes `integration.webhook_received` itself once a connector's inbound webhook is
# verified; integrators may also publish it through the gateway's POST /api/v1/events).
PUBLISHED_FOR_THE_OWNER: dict[str, str] = {}


def _sources(package: str) -> str:
    root = Path(importlib.import_module(package).__file__ or "").parent
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py")))


@pytest.mark.parametrize("entry", list(default_catalog()), ids=lambda e: e.name)
def test_the_owner_of_each_catalog_type_publishes_it(entry) -> None:  # type: ignore[no-untyped-def]
    producer = PUBLISHED_FOR_THE_OWNER.get(entry.name, entry.owner)
    assert f'"{entry.name}"' in _sources(f"edrs_{producer}"), (
        f"{entry.name} is in the catalog but edrs_{producer} never publishes it: publish it "
        "(with a test that it is published) or take it out of the catalog and docs/events.md"
    )

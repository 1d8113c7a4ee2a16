"""docs/contracts.md lists every RPC of every service under its service's row."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import edrs_proto

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "contracts.md"
# A table row: | `Service` (`edrs.area.v1`) | `Rpc` | ... |, the service cell blank on its later rows.
ROW = re.compile(r"^\|\s*(?:`(\w+)` \(`([\w.]+)`\))?\s*\|\s*`(\w+)`\s*\|")


def documented() -> set[tuple[str, str]]:
    """(full service name, RPC) for every row of the table."""
    found: set[tuple[str, str]] = set()
    service = None
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if not match:
            continue
        if match.group(1):
            service = f"{match.group(2)}.{match.group(1)}"
        assert service is not None, f"a row before any service: {line}"
        found.add((service, match.group(3)))
    return found


def declared() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in sorted(Path(edrs_proto.__file__).parent.glob("*/v1/*_pb2.py")):
        area, module = path.parent.parent.name, path.stem
        descriptor = importlib.import_module(f"edrs_proto.{area}.v1.{module}").DESCRIPTOR
        for service in descriptor.services_by_name.values():
            found |= {(service.full_name, m.name) for m in service.methods}
    return found


def test_every_rpc_is_documented() -> None:
    missing = sorted(declared() - documented())
    assert not missing, f"docs/contracts.md lacks these RPCs: {missing}"


def test_every_documented_rpc_exists() -> None:
    unknown = sorted(documented() - declared())
    assert not unknown, f"docs/contracts.md lists RPCs no proto declares: {unknown}"

"""The fleet's one list of services is each folder's own declaration (an `edrs.services` entry
point); what else names the services — the event catalog's owners, the protos, the README — must
agree with it, so adding a service is its folder, its proto, and documentation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from edrs_core.registry import ENTRY_POINT_GROUP, describe, installed_declarations
from edrs_events import default_catalog

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = sorted(p.parent.name for p in ROOT.glob("services/*/pyproject.toml"))
DECLARED = {d.name: d for d in installed_declarations()}


@pytest.mark.parametrize("folder", FOLDERS)
def test_every_service_folder_declares_itself_once_and_is_installed(folder: str) -> None:
    project = tomllib.loads((ROOT / "services" / folder / "pyproject.toml").read_text())["project"]
    declared = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    assert declared == {folder: f"edrs_{folder}.app:definition"}, (
        f"services/{folder}/pyproject.toml must declare "
        f'[project.entry-points."{ENTRY_POINT_GROUP}"] {folder} = "edrs_{folder}.app:definition"'
    )
    assert folder in DECLARED, f"services/{folder} is not installed: run `make install`"


def test_the_installed_services_are_the_folders() -> None:
    assert sorted(DECLARED) == FOLDERS


@pytest.mark.parametrize("service", sorted(DECLARED))
def test_every_service_has_its_proto_area(service: str) -> None:
    assert list((ROOT / "protos" / "edrs" / service / "v1").glob("*.proto")), (
        f"protos/edrs/{service}/v1/ has no .proto"
    )


def test_every_event_type_is_owned_by_a_declared_service_and_every_service_owns_some() -> None:
    owners = {entry.owner for entry in default_catalog()}
    assert owners <= set(DECLARED), f"owners that are no service: {owners - set(DECLARED)}"
    assert set(DECLARED) <= owners, f"services owning no event type: {set(DECLARED) - owners}"


def test_the_readme_lists_every_service_with_its_declared_ports() -> None:
    text = (ROOT / "README.md").read_text()
    rows = {
        m["name"]: (int(m["grpc"]), int(m["http"]), int(m["metrics"]))
        for m in re.finditer(
            r"^\| (?P<name>[a-z]+) \| [^|]+ \| (?P<grpc>\d+) \| (?P<http>\d+) \| (?P<metrics>\d+) \|$",
            text,
            re.MULTILINE,
        )
    }
    declared = {}
    for name, declaration in DECLARED.items():
        ports = describe(declaration).local_ports
        assert ports is not None, f"{name} declares no local_ports"
        declared[name] = (ports.grpc, ports.http, ports.metrics)
    assert rows == declared

"""Every service image installs every local package the service needs, and runs as uid 1000.

Images cannot be built here (no Docker engine), so this reads the Dockerfiles against the
packages' own dependency lists: a lib that gains a local dependency fails here, not in a registry
build."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL = {p.parent.name: p.parent for p in ROOT.glob("libs/*/pyproject.toml")}
SERVICES = sorted(p.parent.name for p in ROOT.glob("services/*/Dockerfile"))


def local_dependencies(package_dir: Path) -> set[str]:
    """The local packages `package_dir` needs at run time, transitively (by folder name)."""
    project = tomllib.loads((package_dir / "pyproject.toml").read_text())["project"]
    found: set[str] = set()
    for requirement in project.get("dependencies", []):
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
        if name in LOCAL and name not in found:
            found.add(name)
            found |= local_dependencies(LOCAL[name])
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_installs_every_local_package_the_service_needs(service: str) -> None:
    dockerfile = (ROOT / "services" / service / "Dockerfile").read_text()
    install = next(line for line in dockerfile.splitlines() if line.startswith("RUN pip install"))
    for name in local_dependencies(ROOT / "services" / service):
        assert f"COPY libs/{name} libs/{name}" in dockerfile, f"{service}: COPY libs/{name}"
        assert f"./libs/{name}" in install, f"{service}: pip install ./libs/{name}"
    assert f"./services/{service}" in install


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_runs_as_uid_1000(service: str) -> None:
    dockerfile = (ROOT / "services" / service / "Dockerfile").read_text()
    assert "USER 1000:1000" in dockerfile

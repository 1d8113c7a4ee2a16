"""The one Dockerfile builds every service image with every local package the service needs, as uid 1000.

Images cannot be built here (no Docker engine), so this reads the Dockerfile against the packages'
own dependency lists: a service or lib that gains a local dependency fails here, not in a registry
build. The image recipe is shared (docs/decisions/0007-deployment-artifacts.md): the service is the
SERVICE build argument."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCAL = {p.parent.name: p.parent for p in ROOT.glob("libs/*/pyproject.toml")}
SERVICES = sorted(p.parent.name for p in ROOT.glob("services/*/pyproject.toml"))


def local_dependencies(package_dir: Path) -> dict[str, set[str]]:
    """The local packages `package_dir` needs at run time, transitively, with the extras asked."""
    project = tomllib.loads((package_dir / "pyproject.toml").read_text())["project"]
    found: dict[str, set[str]] = {}
    for requirement in project.get("dependencies", []):
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", requirement)
        assert match, requirement
        name, extras = match.group(1), match.group(2)
        if name not in LOCAL:
            continue
        wanted = {e.strip() for e in extras.split(",")} if extras else set()
        first = name not in found
        found.setdefault(name, set()).update(wanted)
        if first:
            for dep, dep_extras in local_dependencies(LOCAL[name]).items():
                found.setdefault(dep, set()).update(dep_extras)
    return found


def install_line() -> str:
    lines = DOCKERFILE.read_text().splitlines()
    return next(line for line in lines if line.startswith("RUN pip install -c constraints.txt ./"))


@pytest.mark.parametrize("service", SERVICES)
def test_the_image_installs_every_local_package_the_service_needs(service: str) -> None:
    dockerfile = DOCKERFILE.read_text()
    install = install_line()
    for name, extras in local_dependencies(ROOT / "services" / service).items():
        assert f"COPY libs/{name} libs/{name}" in dockerfile, f"{service}: COPY libs/{name}"
        installed = re.search(rf"\./libs/{re.escape(name)}(?:\[([^\]]*)\])?", install)
        assert installed, f"{service}: pip install ./libs/{name}"
        given = {e.strip() for e in (installed.group(1) or "").split(",") if e.strip()}
        assert extras <= given, f"{service}: ./libs/{name} needs extras {sorted(extras - given)}"
    assert "COPY services/${SERVICE} services/${SERVICE}" in dockerfile
    assert '"./services/${SERVICE}"' in install


def test_the_image_runs_as_uid_1000_with_a_health_check_from_a_separate_build_stage() -> None:
    dockerfile = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM ", dockerfile, flags=re.MULTILINE)
    assert len(stages) >= 2, "multi-stage: the compilers stay in the build stage"
    runtime = dockerfile.split("\nFROM ")[-1]
    assert "USER 1000:1000" in runtime
    assert "HEALTHCHECK" in runtime and "/health/readiness" in runtime
    assert "build-essential" not in runtime


def test_no_service_keeps_a_dockerfile_of_its_own() -> None:
    # One recipe: a per-service copy would drift from it.
    assert not list(ROOT.glob("services/*/Dockerfile"))


def test_the_entry_point_runs_the_service_module(tmp_path: Path) -> None:
    # The image's entry point is written by a printf in the build stage: run that very command,
    # then the script it writes. Without a database URL the service stops at its settings, which
    # proves the script reached edrs_<service>'s own start-up.
    run = next(
        block
        for block in DOCKERFILE.read_text().split("\nRUN ")
        if block.startswith("printf '#!/opt/venv/bin/python")
    )
    command = run.split(" > /opt/venv/bin/edrs-service")[0].replace("\\\n", " ")
    script = tmp_path / "edrs-service"
    subprocess.run(
        ["sh", "-c", f"{command} > {script}"],
        env={"SERVICE": "integration", "PATH": os.environ["PATH"]},
        check=True,
    )
    assert 'os.environ.setdefault("EDRS_INTEGRATION_HOST", "0.0.0.0")' in script.read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDRS_")}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "EDRS_INTEGRATION_DATABASE_URL is required" in done.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health/readiness" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_health_check_asks_readiness_on_the_service_port(status: int, healthy: bool) -> None:
    line = next(x for x in DOCKERFILE.read_text().splitlines() if x.startswith("HEALTHCHECK"))
    command = json.loads(line.split(" CMD ", 1)[1])
    handler = type("Handler", (_Health,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        env = {
            **os.environ,
            "EDRS_SERVICE": "memory",
            "EDRS_MEMORY_HTTP_PORT": str(server.server_address[1]),
        }
        done = subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30
        )
    finally:
        server.shutdown()
        server.server_close()
    assert command[0] == "python"
    assert (done.returncode == 0) is healthy, done.stderr

"""Fleet harness: starts the whole fleet the way `make run` does (`edrs dev up`) and stops it.

``fleet`` is one fleet shared by the fleet tests (package scope: stopped, models and all, when
the last of them ends); ``fleet_control`` starts a fleet of a test's own. One fleet runs at a
time: tests that start their own run before the shared fleet starts (see
pytest_collection_modifyitems), and starting a second fleet while one runs fails.
Teardown runs `edrs dev down` and fails if any process of the fleet is still alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from edrs_cli.fleet import SERVICE_KEYS_FILE, service_names
from edrs_core.engines.pytest_plugin import engine_dir
from edrs_core.identity import ServiceTokens, load_private_key
from edrs_core.registry import folder_declarations

START_TIMEOUT = 240.0
STOP_TIMEOUT = 120.0


def edrs_command() -> list[str]:
    """The installed `edrs` script of this interpreter's environment, else `python -m edrs_cli`."""
    script = Path(sys.executable).parent / "edrs"
    if script.exists():
        return [str(script)]
    found = shutil.which("edrs")
    return [found] if found else [sys.executable, "-m", "edrs_cli"]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class RunningFleet:
    """A fleet started by `edrs dev up`, as `edrs dev status --json` and fleet.json describe it."""

    state_dir: Path
    up_process: subprocess.Popen[bytes]
    up_output: Path
    services: dict[str, dict[str, Any]]
    state: dict[str, Any] = field(default_factory=dict)

    def grpc_address(self, name: str) -> str:
        return str(self.services[name]["grpc"])

    def http_url(self, name: str) -> str:
        return f"http://{self.services[name]['http']}"

    def metrics_url(self, name: str) -> str:
        return f"http://{self.services[name]['metrics']}/metrics"

    @property
    def gateway_url(self) -> str:
        return self.http_url("gateway")

    def log(self, name: str) -> str:
        """Everything the service (or engine: postgres, redis, nats) has logged so far."""
        if name in self.state.get("engines", {}):
            path = Path(self.state["engines"][name]["log"])
        else:
            path = self.state_dir / "logs" / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")

    def pids(self) -> dict[str, int]:
        """Every process of the fleet: supervisor, services and engines."""
        pids = {"supervisor": self.up_process.pid}
        pids.update({name: int(s["pid"]) for name, s in self.services.items() if s["pid"]})
        for name, engine in self.state.get("engines", {}).items():
            if engine.get("pid"):
                pids[f"engine {name}"] = int(engine["pid"])
        return pids

    def database_url(self, service: str) -> str:
        """The service's own database, on the fleet's PostgreSQL (as `edrs dev up` assigns it)."""
        port = self.state["engines"]["postgres"]["port"]
        return f"postgresql://postgres@127.0.0.1:{port}/edrs_{service}"

    def redis_url(self, service: str) -> str:
        """The service's own Redis database (one per service, numbered in fleet order)."""
        port = self.state["engines"]["redis"]["port"]
        index = [s["name"] for s in self.state["services"]].index(service)
        return f"redis://127.0.0.1:{port}/{index}"

    @contextlib.contextmanager
    def service_stopped(self, name: str) -> Iterator[StoppedService]:
        """`edrs dev stop NAME` for the block; the service is started again (`edrs dev start`)
        by `.start()` or, at the latest, when the block ends: the fleet is shared."""
        stopped = StoppedService(self, name)
        result = self.edrs("dev", "stop", name, timeout=STOP_TIMEOUT)
        assert result.returncode == 0, f"`edrs dev stop {name}`:\n{result.stdout}{result.stderr}"
        try:
            yield stopped
        finally:
            stopped.start()

    def service_metadata(self, tenant: str, service: str = "task") -> list[tuple[str, str]]:
        """gRPC metadata of a call `service` makes for `tenant` with no user behind it (as an event
        handler does): a service token signed with the key `edrs dev up` gave that service."""
        keys = json.loads((self.state_dir / SERVICE_KEYS_FILE).read_text())
        tokens = ServiceTokens(
            service, load_private_key(keys[service], service), audience="edrs-fleet"
        )
        return [("authorization", f"Bearer {tokens.token_for(tenant)}")]

    def operator_metadata(self) -> list[tuple[str, str]]:
        """gRPC metadata of an operator: a token from `edrs admin operator-token`."""
        result = self.edrs("admin", "operator-token")
        assert result.returncode == 0, result.stderr
        token = re.search(r"^token: (\S+)$", result.stdout, re.MULTILINE)
        assert token is not None, result.stdout
        return [("authorization", f"Bearer {token[1]}")]

    def edrs(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run `edrs <args> --state-dir <this fleet>`."""
        return subprocess.run(
            [*edrs_command(), *args, "--state-dir", str(self.state_dir)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def edrs_in_fleet(
        self, *args: str, timeout: float = 60.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `edrs <args>` as a user would beside this fleet (EDRS_STATE_DIR names it)."""
        env = {**os.environ, "EDRS_STATE_DIR": str(self.state_dir)}
        env.pop("EDRS_BUS_URL", None)
        env.pop("EDRS_NATS_URL", None)
        return subprocess.run(
            [*edrs_command(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            input=input,
            check=False,
        )


@dataclass
class StoppedService:
    fleet: RunningFleet
    name: str
    started: bool = False

    def start(self) -> None:
        """`edrs dev start NAME`, once; returns when the service is ready again."""
        if self.started:
            return
        self.started = True
        result = self.fleet.edrs("dev", "start", self.name, timeout=START_TIMEOUT)
        assert result.returncode == 0, (
            f"`edrs dev start {self.name}`:\n{result.stdout}{result.stderr}"
        )
        # A new process: keep the teardown's leftover check and the addresses current.
        for row in _status(self.fleet.state_dir) or []:
            self.fleet.services[row["name"]] = row


def _status(state_dir: Path) -> list[dict[str, Any]] | None:
    result = subprocess.run(
        [*edrs_command(), "dev", "status", "--json", "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        return None
    return json.loads(result.stdout)


def start_fleet(
    state_dir: Path, timeout: float = START_TIMEOUT, services_dir: Path | None = None
) -> RunningFleet:
    """`edrs dev up` in the background; returns once status shows every service ready.

    ``services_dir``: service folders, not installed, that join the installed services.
    """
    expected = set(service_names())
    extra: list[str] = []
    if services_dir is not None:
        expected |= {d.name for d in folder_declarations(services_dir)}
        extra = ["--services-dir", str(services_dir)]
    output = state_dir.with_name(f"{state_dir.name}-up.out")
    with output.open("wb") as out:
        process = subprocess.Popen(
            [
                *edrs_command(),
                "dev",
                "up",
                "--state-dir",
                str(state_dir),
                "--wait-timeout",
                str(timeout),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout + 10
    rows: list[dict[str, Any]] | None = None
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"`edrs dev up` exited with code {process.returncode} before the fleet was ready:\n"
                + output.read_text(errors="replace")
            )
        rows = _status(state_dir)
        if rows and {r["name"] for r in rows} == expected and all(r["ready"] for r in rows):
            break
        if time.monotonic() > deadline:
            not_ready = sorted(expected - {r["name"] for r in rows or [] if r["ready"]})
            process.terminate()
            process.wait(STOP_TIMEOUT)
            pytest.fail(
                f"fleet not ready after {timeout:.0f}s; not ready: {not_ready}\n"
                + output.read_text(errors="replace")
            )
        # Doubles as the poll interval and returns at once if `up` exits.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(1.0)
    state = json.loads((state_dir / "fleet.json").read_text())
    return RunningFleet(
        state_dir=state_dir,
        up_process=process,
        up_output=output,
        services={r["name"]: r for r in rows},
        state=state,
    )


def stop_fleet(fleet: RunningFleet) -> dict[str, int]:
    """`edrs dev down`; returns the fleet's processes still alive afterwards (should be none)."""
    result = fleet.edrs("dev", "down", timeout=STOP_TIMEOUT)
    assert result.returncode == 0, f"`edrs dev down` failed:\n{result.stdout}\n{result.stderr}"
    try:
        fleet.up_process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        fleet.up_process.kill()
        fleet.up_process.wait()
    return {name: pid for name, pid in fleet.pids().items() if _alive(pid)}


class FleetControl:
    """Starts and stops fleets, one at a time: two fleets would compete for two cores and load
    every model twice, and a test timed against one would measure both."""

    def __init__(self) -> None:
        self.running: RunningFleet | None = None

    def start(
        self, state_dir: Path, timeout: float = START_TIMEOUT, services_dir: Path | None = None
    ) -> RunningFleet:
        if self.running is not None:
            pytest.fail(
                f"a fleet is already running ({self.running.state_dir}); "
                "fleet tests run one fleet at a time"
            )
        self.running = start_fleet(state_dir, timeout, services_dir)
        return self.running

    def stop(self, fleet: RunningFleet) -> dict[str, int]:
        try:
            return stop_fleet(fleet)
        finally:
            if self.running is fleet:
                self.running = None


# A fixture, because conftest modules are not importable under --import-mode=importlib.
@pytest.fixture(scope="session")
def fleet_control() -> FleetControl:
    return FleetControl()


@pytest.fixture(scope="package")
def fleet(fleet_control: FleetControl) -> Iterator[RunningFleet]:
    """The whole fleet, started once for the fleet tests with `edrs dev up`, stopped with `down`.

    Its state folder (PostgreSQL's data among it) is outside pytest's temp folders: see
    `engine_dir`."""
    with engine_dir("fleet") as folder:
        running = fleet_control.start(folder / "state")
        yield running
        leftovers = fleet_control.stop(running)
    assert not leftovers, f"processes left after `edrs dev down`: {leftovers}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start a fleet of their own run before any test of the shared fleet, so that
    the two never run at once (the order of the rest is kept)."""
    here = Path(__file__).parent
    mine = [i for i in items if here in Path(str(i.path)).parents]
    # `fleet` itself uses fleet_control: a test of its own fleet asks for fleet_control only.
    own = [
        i
        for i in mine
        if "fleet_control" in getattr(i, "fixturenames", ())
        and "fleet" not in getattr(i, "fixturenames", ())
    ]
    if not own:
        return
    first = items.index(mine[0])
    rest = [i for i in mine if i not in own]
    others_before = [i for i in items[:first] if i not in mine]
    others_after = [i for i in items[first:] if i not in mine]
    items[:] = others_before + own + rest + others_after

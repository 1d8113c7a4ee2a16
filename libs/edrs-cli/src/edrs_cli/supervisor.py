"""``Fleet``: starts the engines and every service, supervises them, and stops them all.

The running supervisor records itself in ``<state>/fleet.json`` and holds ``<state>/fleet.lock``;
``status()`` and ``down()`` work from another process through that file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
import psutil
from edrs_core.engines import (
    EmbeddedEngine,
    EmbeddedNats,
    EmbeddedOpenBao,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedTemporal,
    tail_lines,
    terminate_process,
    wait_gone,
)

from edrs_cli.fleet import (
    EngineEndpoints,
    ServiceDiscoveryError,
    ServiceSpec,
    assign_ports,
    fleet_services,
    service_env,
    service_keys,
)

HOST = "127.0.0.1"
DEFAULT_GRACE = 10.0
DEFAULT_WAIT_TIMEOUT = 120.0
LOG_TAIL = 30
# How often the supervisor looks for a stopped service to start again (`edrs dev start`).
HOLD_POLL_SECONDS = 0.5
# Headroom for PostgreSQL: eight services, each with its own pool.
DEV_POSTGRES_SETTINGS = {"max_connections": "300"}


class FleetError(RuntimeError):
    """A fleet operation failed; the message is meant for the user."""


class FleetAlreadyRunningError(FleetError):
    pass


class FleetNotRunningError(FleetError):
    pass


class FleetInterruptedError(FleetError):
    """SIGINT/SIGTERM arrived while the fleet was starting."""


class FleetDeclarationError(FleetError):
    """A service's declaration cannot be read, so the fleet does not start."""


@dataclass(frozen=True)
class ProcessExit:
    """A supervised process that exited on its own."""

    name: str
    code: int
    log_path: Path

    def log_tail(self, lines: int = LOG_TAIL) -> list[str]:
        return tail_lines(self.log_path, lines)

    def reason(self, lines: int = 500) -> str | None:
        """The message of the last error a service logged (its JSON log lines, level ERROR or
        CRITICAL) among the log's last `lines`: why a service stopped, in one line, where the
        tail alone ends with its shutdown. None when it logged none (an engine, a crash)."""
        for line in reversed(tail_lines(self.log_path, lines)):
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("level") in ("ERROR", "CRITICAL"):
                message = str(record.get("message", "")).strip()
                return message.splitlines()[0] if message else None
        return None


class ServiceDiedError(FleetError):
    def __init__(self, exit: ProcessExit) -> None:
        self.exit = exit
        super().__init__(f"{exit.name} exited with code {exit.code}")


class FleetNotReadyError(FleetError):
    def __init__(self, names: list[str], timeout: float, log_paths: dict[str, Path]) -> None:
        self.names = names
        self.log_paths = log_paths
        super().__init__(f"not ready after {timeout:.0f}s: {', '.join(names)}")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    grpc: str
    http: str
    metrics: str
    ready: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _address(port: int) -> str:
    return f"{HOST}:{port}"


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _alive(pid: int | None, create_time: float | None) -> bool:
    """True if ``pid`` runs and is the same process as recorded (pids get reused)."""
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 1.0
    except psutil.Error:
        return False


def is_ready(http_address: str, timeout: float = 1.0) -> bool:
    """Live readiness check of one service: ``GET /health/readiness`` answers 200."""
    try:
        response = httpx.get(f"http://{http_address}/health/readiness", timeout=timeout)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@dataclass
class _Service:
    spec: ServiceSpec
    index: int
    grpc: int
    http: int
    metrics: int
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    # Stopped on purpose (`edrs dev stop`): its exit does not end the fleet.
    held: bool = False

    @property
    def http_address(self) -> str:
        return _address(self.http)

    def record(self) -> dict[str, Any]:
        pid = self.process.pid if self.process else None
        return {
            "name": self.spec.name,
            "pid": pid,
            "create_time": _create_time(pid) if pid else None,
            "grpc": _address(self.grpc),
            "http": _address(self.http),
            "metrics": _address(self.metrics),
            "log": str(self.log_path),
            "ready": self.ready,
            "held": self.held,
        }


class Fleet:
    """The local fleet rooted at ``state_dir`` (engine data, logs, fleet.json).

    ``up()`` starts ``services`` when given, else every declared service: the installed ones and
    the folders of ``services_dir`` (e.g. the checkout's ``services/``) that are not installed.
    """

    def __init__(
        self,
        state_dir: Path | str,
        services: Sequence[ServiceSpec] | None = None,
        *,
        services_dir: Path | None = None,
        python: str = sys.executable,
        grace: float = DEFAULT_GRACE,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.services: tuple[ServiceSpec, ...] | None = (
            None if services is None else tuple(services)
        )
        self.services_dir = services_dir
        self.python = python
        self.grace = grace
        self.engines: dict[str, EmbeddedEngine] = {}
        self._services: list[_Service] = []
        self._lock_file: IO[str] | None = None
        self._stop_requested = False
        # Child exits and signals write to this pipe, so the supervisor sleeps in select().
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._phase = "starting"

    # -- paths ----------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "fleet.json"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def hold_path(self, name: str) -> Path:
        """Marker of a service stopped on purpose: while it exists, the supervisor leaves the
        service stopped; once removed, it starts the service again."""
        return self.state_dir / "held" / name

    def log_path(self, name: str) -> Path:
        """Log file of a service, or of an engine (postgres, redis, nats, temporal, openbao)."""
        if name in {"postgres", "redis", "nats", "temporal", "openbao"}:
            return self.state_dir / name / f"{name}.log"
        return self.logs_dir / f"{name}.log"

    # -- reading a fleet from any process -------------------------------------------------------

    def read_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def running_state(self) -> dict[str, Any]:
        """fleet.json of a live supervisor, else FleetNotRunningError."""
        state = self.read_state()
        if state is None:
            raise FleetNotRunningError(f"no fleet is running in {self.state_dir}")
        supervisor = state.get("supervisor", {})
        if not _alive(supervisor.get("pid"), supervisor.get("create_time")):
            raise FleetNotRunningError(
                f"no fleet is running in {self.state_dir} "
                f"(supervisor {supervisor.get('pid')} is gone; `edrs dev down` cleans up)"
            )
        return state

    def status(self, timeout: float = 1.0) -> list[ServiceStatus]:
        """Each service of the running fleet with a live readiness check."""
        records = self.running_state().get("services", [])

        def check(record: dict[str, Any]) -> ServiceStatus:
            alive = _alive(record.get("pid"), record.get("create_time"))
            return ServiceStatus(
                name=record["name"],
                pid=record.get("pid"),
                grpc=record["grpc"],
                http=record["http"],
                metrics=record["metrics"],
                ready=alive and is_ready(record["http"], timeout),
            )

        if not records:
            return []
        with ThreadPoolExecutor(max_workers=len(records)) as pool:
            return list(pool.map(check, records))

    def down(self, timeout: float | None = None) -> bool:
        """Stop the fleet's supervisor and wait until every process is gone; False if none ran."""
        state = self.read_state()
        if state is None:
            return False
        timeout = timeout if timeout is not None else self.grace + 60.0
        supervisor = state.get("supervisor", {})
        pid, create_time = supervisor.get("pid"), supervisor.get("create_time")
        if _alive(pid, create_time):
            # The supervisor stops services, then engines, then removes fleet.json.
            terminate_process(pid, signal.SIGTERM, timeout=timeout, create_time=create_time)
        self._cleanup_leftovers(state)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
        return True

    def _record(self, name: str) -> dict[str, Any]:
        for record in self.running_state().get("services", []):
            if record["name"] == name:
                return dict(record)
        raise FleetError(f"the fleet in {self.state_dir} runs no service {name!r}")

    def _wait_record(
        self, name: str, done: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            record = self._record(name)
            if done(record):
                return record
            if time.monotonic() > deadline:
                raise FleetError(f"{name} did not {what} within {timeout:.0f}s")
            time.sleep(0.1)

    def stop_service(self, name: str, timeout: float | None = None) -> None:
        """Stop one service of the running fleet and keep it stopped (the rest runs on) until
        `start_service`; from any process. Its events wait in the bus meanwhile."""
        record = self._record(name)
        timeout = timeout if timeout is not None else self.grace + 30.0
        marker = self.hold_path(name)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        if _alive(record.get("pid"), record.get("create_time")):
            terminate_process(
                record["pid"], signal.SIGTERM, timeout=timeout, create_time=record["create_time"]
            )
        # Returns once the supervisor has seen the exit as a hold, not as a failure.
        self._wait_record(name, lambda r: bool(r.get("held")), timeout, "stop")

    def start_service(self, name: str, timeout: float = DEFAULT_WAIT_TIMEOUT) -> ServiceStatus:
        """Start a service `stop_service` stopped, on its ports; returns once it is ready."""
        if not self._record(name).get("held"):
            raise FleetError(f"{name} was not stopped with `edrs dev stop`")
        with contextlib.suppress(FileNotFoundError):
            self.hold_path(name).unlink()
        record = self._wait_record(
            name,
            lambda r: not r.get("held") and _alive(r.get("pid"), r.get("create_time")),
            timeout,
            "start",
        )
        deadline = time.monotonic() + timeout
        while not is_ready(record["http"]):
            if not _alive(record.get("pid"), record.get("create_time")):
                raise FleetError(f"{name} exited while starting (see `edrs dev logs {name}`)")
            if time.monotonic() > deadline:
                raise FleetError(f"{name} not ready after {timeout:.0f}s")
            time.sleep(0.2)
        return next(s for s in self.status() if s.name == name)

    def _cleanup_leftovers(self, state: dict[str, Any]) -> None:
        """Stop what a dead supervisor left behind: services first, then engines."""
        services = [
            record
            for record in state.get("services", [])
            if _alive(record.get("pid"), record.get("create_time"))
        ]
        for record in services:
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                os.kill(record["pid"], signal.SIGTERM)
        procs = []
        for record in services:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(record["pid"]))
        for straggler in wait_gone(procs, self.grace):
            with contextlib.suppress(psutil.Error):
                straggler.kill()
        wait_gone(procs, 5.0)
        for info in state.get("engines", {}).values():
            if _alive(info.get("pid"), info.get("create_time")):
                terminate_process(
                    info["pid"],
                    info.get("stop_signal", signal.SIGTERM),
                    timeout=30.0,
                    create_time=info.get("create_time"),
                )

    # -- running the fleet (the supervisor process) ---------------------------------------------

    def handle_signals(self) -> None:
        """Make SIGINT/SIGTERM request a clean stop; call from the main thread."""

        def request_stop(signum: int, frame: FrameType | None) -> None:
            self._stop_requested = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        # The C-level handler writes to the pipe, waking the select() in _sleep.
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def up(
        self,
        wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
        on_engine: Callable[[str, EmbeddedEngine], None] | None = None,
    ) -> list[ServiceStatus]:
        """Start engines and services and wait until every service is ready.

        Raises FleetAlreadyRunningError, FleetDeclarationError, FleetInterruptedError,
        ServiceDiedError, FleetNotReadyError or EngineError; call ``shutdown()`` afterwards in
        every case.
        """
        self.claim()
        if self.services is None:
            try:
                self.services = fleet_services(self.services_dir, self.python)
            except ServiceDiscoveryError as exc:
                raise FleetDeclarationError(str(exc)) from None
        # Holds of a previous run (`edrs dev stop`) do not carry over.
        shutil.rmtree(self.hold_path("_").parent, ignore_errors=True)
        stale = self.read_state()
        if stale is not None:
            # The previous supervisor was killed without cleaning up.
            self._cleanup_leftovers(stale)
        self._write_state()
        self._start_engines(on_engine)
        self._spawn_services()
        self._write_state()
        self._wait_ready(wait_timeout)
        self._phase = "running"
        self._write_state()
        return self.current_status()

    def current_status(self) -> list[ServiceStatus]:
        return [
            ServiceStatus(
                name=s.spec.name,
                pid=s.process.pid if s.process else None,
                grpc=_address(s.grpc),
                http=_address(s.http),
                metrics=_address(s.metrics),
                ready=s.ready,
            )
            for s in self._services
        ]

    @property
    def gateway_url(self) -> str | None:
        for service in self._services:
            if service.spec.name == "gateway":
                return f"http://{service.http_address}"
        return None

    def supervise(self) -> ProcessExit | None:
        """Block until a stop is requested (None) or a service or engine exits (its ProcessExit)."""
        while True:
            if self._stop_requested:
                return None
            exited = self._first_exit()
            if exited is not None:
                return exited
            self._start_released()
            # While a service is held, look for its release now and then.
            held = any(s.held for s in self._services)
            self._sleep(HOLD_POLL_SECONDS if held else None)

    def shutdown(self) -> list[ProcessExit]:
        """SIGTERM services, SIGKILL those past the grace period, stop engines, remove fleet.json.

        Returns services that exited non-zero during the shutdown.
        """
        self._phase = "stopping"
        if self._lock_file is not None:
            self._write_state()
        running = [s for s in self._services if s.process and s.process.poll() is None]
        for service in running:
            assert service.process is not None
            with contextlib.suppress(ProcessLookupError):
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for service in running:
            assert service.process is not None
            try:
                service.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # Each service leads its own process group: take any helper processes down too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(service.process.pid, signal.SIGKILL)
                service.process.wait()
        # A service that was still starting (never ready) may not have installed its SIGTERM
        # handler yet: killed by the signal it was sent, it stopped as asked.
        failed = [
            ProcessExit(s.spec.name, s.process.returncode, s.log_path)
            for s in running
            if s.process is not None
            and s.process.returncode != 0
            and not (s.process.returncode == -signal.SIGTERM and not s.ready)
        ]
        for engine in reversed(list(self.engines.values())):
            engine.stop()
        if self._lock_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.state_file.unlink()
            self._lock_file.close()
            self._lock_file = None
        return failed

    # -- internals ------------------------------------------------------------------------------

    def claim(self) -> None:
        """Take the state dir's lock (FleetAlreadyRunningError if another supervisor holds it)."""
        if self._lock_file is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        lock = (self.state_dir / "fleet.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            state = self.read_state() or {}
            pid = state.get("supervisor", {}).get("pid", "?")
            raise FleetAlreadyRunningError(
                f"a fleet is already running in {self.state_dir} (supervisor pid {pid}); "
                "stop it with `edrs dev down`"
            ) from None
        self._lock_file = lock

    def _write_state(self) -> None:
        me = os.getpid()
        state = {
            "version": 1,
            "phase": self._phase,
            "state_dir": str(self.state_dir),
            "supervisor": {"pid": me, "create_time": _create_time(me)},
            "engines": {name: engine.describe() for name, engine in self.engines.items()},
            "services": [service.record() for service in self._services],
            "gateway_url": self.gateway_url,
        }
        tmp = self.state_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def _start_engines(self, on_engine: Callable[[str, EmbeddedEngine], None] | None) -> None:
        engines: list[EmbeddedEngine] = [
            EmbeddedPostgres(self.state_dir / "postgres", settings=DEV_POSTGRES_SETTINGS),
            EmbeddedRedis(self.state_dir / "redis"),
            EmbeddedNats(self.state_dir / "nats"),
            # Workflows, timers and schedules persist in state_dir/temporal/temporal.db.
            EmbeddedTemporal(self.state_dir / "temporal"),
            EmbeddedOpenBao(self.state_dir / "openbao"),
        ]
        for engine in engines:
            if self._stop_requested:
                raise FleetInterruptedError("interrupted while starting engines")
            # Registered before start so that shutdown() also stops a half-started engine.
            self.engines[engine.name] = engine
            engine.start()
            self._watch(engine.wait)
            self._write_state()
            if on_engine is not None:
                on_engine(engine.name, engine)

    def _endpoints(self) -> EngineEndpoints:
        postgres, redis, nats, temporal = (
            self.engines[n] for n in ("postgres", "redis", "nats", "temporal")
        )
        openbao = self.engines["openbao"]
        assert isinstance(openbao, EmbeddedOpenBao)
        return EngineEndpoints(
            postgres=f"postgresql://postgres@{HOST}:{postgres.port}",
            redis=f"redis://{HOST}:{redis.port}",
            nats=nats.url(),
            temporal=temporal.url(),
            vault=openbao.url(),
            vault_token=openbao.root_token,
        )

    def _spawn_services(self) -> None:
        assert self.services is not None
        ports = assign_ports(self.services, host=HOST)
        endpoints = self._endpoints()
        base_env = dict(os.environ)
        keys = service_keys(self.services, self.state_dir)
        for index, spec in enumerate(self.services):
            own = ports[spec.name]
            service = _Service(
                spec,
                index,
                own.grpc,
                own.http,
                own.metrics,
                self.log_path(spec.name),
                env=service_env(spec, index, ports, endpoints, host=HOST, base=base_env, keys=keys),
            )
            self._services.append(service)
            self._spawn(service)

    def _spawn(self, service: _Service) -> None:
        with service.log_path.open("ab") as log:
            service.process = subprocess.Popen(
                [self.python, "-m", service.spec.module],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=service.env,
                # Own session: Ctrl-C reaches only the supervisor, which stops services first.
                start_new_session=True,
            )
        self._watch(service.process.wait)

    def _start_released(self) -> None:
        """Start again each held service whose hold marker is gone (`edrs dev start`)."""
        for service in self._services:
            if service.held and not self.hold_path(service.spec.name).exists():
                service.held = False
                self._spawn(service)
                self._write_state()

    def _watch(self, wait: Callable[[], int]) -> None:
        def watcher() -> None:
            wait()
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(self._wake_w, b"x")

        threading.Thread(target=watcher, daemon=True).start()

    def _sleep(self, timeout: float | None) -> None:
        select.select([self._wake_r], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _first_exit(self) -> ProcessExit | None:
        for service in self._services:
            if service.process is not None and service.process.poll() is not None:
                if self._phase == "running" and self.hold_path(service.spec.name).exists():
                    # Stopped on purpose: not a failure; kept stopped until released.
                    service.process, service.ready, service.held = None, False, True
                    self._write_state()
                    continue
                return ProcessExit(service.spec.name, service.process.returncode, service.log_path)
        for name, engine in self.engines.items():
            code = engine.exit_code()
            if code is not None:
                return ProcessExit(name, code, engine.log_path)
        return None

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(max_workers=max(1, len(self._services))) as pool:
            while True:
                if self._stop_requested:
                    raise FleetInterruptedError("interrupted while waiting for services")
                exited = self._first_exit()
                if exited is not None:
                    raise ServiceDiedError(exited)
                pending = [s for s in self._services if not s.ready]
                if not pending:
                    return
                results = pool.map(lambda s: is_ready(s.http_address, 1.0), pending)
                changed = False
                for service, ready in zip(pending, results, strict=True):
                    if ready:
                        service.ready = changed = True
                if changed:
                    self._write_state()
                if all(s.ready for s in self._services):
                    return
                if time.monotonic() > deadline:
                    names = [s.spec.name for s in self._services if not s.ready]
                    raise FleetNotReadyError(
                        names, timeout, {s.spec.name: s.log_path for s in self._services}
                    )
                # Woken early by a child exit or a signal.
                self._sleep(0.2)

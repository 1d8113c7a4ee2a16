"""Lifecycle shared by engines run as child processes: port, readiness wait, stop, log tail."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import psutil

from edrs_core.engines.ports import DEFAULT_HOST, free_port, port_is_free

LOG_TAIL_LINES = 30


def tail_lines(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """Last ``lines`` lines of a text file, or an empty list when it does not exist."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except FileNotFoundError:
        return []


class EngineError(RuntimeError):
    """An engine failed to start or stop; the message carries the tail of its log."""

    def __init__(self, engine: str, message: str, log_path: Path | None = None) -> None:
        self.engine = engine
        self.log_path = log_path
        self.log_tail = tail_lines(log_path) if log_path is not None else []
        text = f"{engine}: {message}"
        if log_path is not None:
            tail = "\n".join(f"  | {line}" for line in self.log_tail) or "  | (log is empty)"
            text += f"\nlast lines of {log_path}:\n{tail}"
        super().__init__(text)


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited (a zombie counts as exited); return those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _is_alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        # Not our children in general (no waitpid possible), so poll their state.
        time.sleep(0.05)


def _is_alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def terminate_process(
    pid: int, sig: int = signal.SIGTERM, timeout: float = 30.0, create_time: float | None = None
) -> None:
    """Signal ``pid`` (and its descendants after ``timeout``) until gone; SIGKILL stragglers.

    ``create_time`` guards against signalling an unrelated process that reused the pid.
    """
    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return
        children = proc.children(recursive=True)
        proc.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return
    wait_gone([proc], timeout)
    # Descendants normally exit with their parent (postgres backends do); kill any that did not.
    leftovers = [p for p in [proc, *children] if _is_alive(p)]
    for straggler in leftovers:
        with contextlib.suppress(psutil.Error):
            straggler.kill()
    wait_gone(leftovers, 5.0)


class EmbeddedEngine(ABC):
    """An engine binary run in the foreground as our child, bound to 127.0.0.1 only."""

    name: ClassVar[str]
    # The signal that asks the engine for a clean, fast shutdown.
    stop_signal: ClassVar[int] = signal.SIGTERM

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        *,
        start_timeout: float = 60.0,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"{self.name}: port must be within 1..65535, got {port}")
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = DEFAULT_HOST
        self.start_timeout = start_timeout
        self._requested_port = port
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- public API -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.name}: not started, no port yet")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @abstractmethod
    def url(self) -> str:
        """Client URL of the running engine."""

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def wait(self) -> int:
        """Block until the engine process exits; return its exit code."""
        if self._process is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._process.wait()

    def start(self) -> Self:
        """Start the engine and return once a client can talk to it (or raise EngineError)."""
        if self.is_running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self._port = self._choose_port()
        self._prepare()
        with self.log_path.open("ab") as log:
            log.write(f"--- edrs: starting {self.name} on {self.host}:{self._port}\n".encode())
            log.flush()
            try:
                self._process = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    # Own session: a Ctrl-C in the terminal reaches the supervisor only, which then
                    # stops services before engines.
                    start_new_session=True,
                    **self._popen_kwargs(),
                )
            except OSError as exc:
                raise EngineError(self.name, f"cannot run {self._command()[0]}: {exc}") from exc
        self._write_state()
        try:
            self._wait_ready()
        except BaseException:
            self._kill()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the engine down cleanly, SIGKILL it after ``timeout``; leaves no process behind."""
        proc = self._process
        if proc is None:
            return
        if proc.poll() is None:
            self._request_stop(timeout)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self._kill_group()
        self._process = None

    def describe(self) -> dict[str, Any]:
        """What a supervisor records about the running engine."""
        pid = self.pid
        create_time = None
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                create_time = psutil.Process(pid).create_time()
        return {
            "url": self.url(),
            "pid": pid,
            "create_time": create_time,
            "port": self._port,
            "log": str(self.log_path),
            "stop_signal": int(self.stop_signal),
        }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data_dir={str(self.data_dir)!r}, port={self._port})"

    # -- hooks for subclasses -------------------------------------------------------------------

    @abstractmethod
    def _command(self) -> list[str]:
        """Command line that runs the engine in the foreground."""

    @abstractmethod
    def _probe(self) -> bool:
        """True once the engine answers a real protocol request."""

    def _prepare(self) -> None:  # noqa: B027 - optional hook
        """One-time set-up of the data dir before the first start (e.g. initdb)."""

    def _popen_kwargs(self) -> dict[str, Any]:
        return {}

    def _request_stop(self, timeout: float) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(self.stop_signal)

    def _leftover_pids(self) -> list[int]:
        """Pids of a previous run of this engine on this data dir that is still alive."""
        state = self._read_state()
        pid, create_time = state.get("pid"), state.get("create_time")
        if not isinstance(pid, int):
            return []
        try:
            proc = psutil.Process(pid)
            if create_time is not None and abs(proc.create_time() - float(create_time)) > 1.0:
                return []
        except psutil.Error:
            return []
        return [pid]

    # -- internals ------------------------------------------------------------------------------

    @property
    def _state_path(self) -> Path:
        return self.data_dir / "engine.json"

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self._state_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self) -> None:
        self._state_path.write_text(json.dumps(self.describe(), indent=2))

    def _choose_port(self) -> int:
        if self._requested_port is not None:
            # Checked up front: a readiness probe would otherwise reach whoever holds the port.
            if not port_is_free(self._requested_port, self.host):
                raise EngineError(
                    self.name, f"port {self._requested_port} on {self.host} is already in use"
                )
            return self._requested_port
        # Reuse the last port so URLs stay stable across runs on the same data dir.
        previous = self._read_state().get("port")
        if isinstance(previous, int) and port_is_free(previous, self.host):
            return previous
        return free_port(self.host)

    def _stop_leftover(self) -> None:
        """A killed run (e.g. kill -9 of the supervisor) may have left the engine running."""
        for pid in self._leftover_pids():
            terminate_process(pid, self.stop_signal, timeout=30.0)

    def _tcp_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            code = self._process.poll()
            if code is not None:
                raise EngineError(
                    self.name, f"exited with code {code} before becoming ready", self.log_path
                )
            if self._tcp_open() and self._probe():
                return
            if time.monotonic() > deadline:
                raise EngineError(
                    self.name,
                    f"not ready on {self.host}:{self.port} after {self.start_timeout:.0f}s",
                    self.log_path,
                )
            # Waiting on the process doubles as the poll interval and notices an early exit.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(0.1)

    def _kill(self) -> None:
        if self._process is None:
            return
        self._kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(10)

    def _kill_group(self) -> None:
        if self._process is None:
            return
        # The engine leads its own process group (start_new_session), so this reaches children too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(10)

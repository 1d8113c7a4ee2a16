"""Engines from pip packages (PostgreSQL+pgvector, Redis, NATS JetStream, Temporal, OpenBao) for
dev and tests."""

from edrs_core.engines._base import (
    EmbeddedEngine,
    EngineError,
    tail_lines,
    terminate_process,
    wait_gone,
)
from edrs_core.engines.nats import EmbeddedNats
from edrs_core.engines.openbao import EmbeddedOpenBao
from edrs_core.engines.ports import free_port, pick_port, port_is_free
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_core.engines.redis import EmbeddedRedis
from edrs_core.engines.temporal import EmbeddedTemporal

__all__ = [
    "EmbeddedEngine",
    "EmbeddedNats",
    "EmbeddedOpenBao",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedTemporal",
    "EngineError",
    "free_port",
    "pick_port",
    "port_is_free",
    "tail_lines",
    "terminate_process",
    "wait_gone",
]

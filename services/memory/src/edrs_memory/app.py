"""Wires the memory service: its store, working memory, embedder, maintenance job and servicer."""

from datetime import timedelta
from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.clock import Clock, SystemClock
from edrs_core.consumers import ConsumedEvent, Consumer
from edrs_core.events import ServiceEvents, start_service_events
from edrs_events import ConsumerOptions
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2_grpc

from edrs_memory import erasure
from edrs_memory.config import MemorySettings
from edrs_memory.embeddings import CachingEmbedder, Embedder, GrpcEmbedder
from edrs_memory.late_embedding import LateEmbeddings
from edrs_memory.recall import RecallPolicy
from edrs_memory.retention import maintain, run_maintenance
from edrs_memory.server import MemoryServicer
from edrs_memory.store.postgres import PostgresMemoryStore, session_settings
from edrs_memory.working import WorkingMemory


def stores(
    rt: Runtime[MemorySettings], events: ServiceEvents, clock: Clock | None = None
) -> tuple[PostgresMemoryStore, WorkingMemory]:
    """The store and working memory over the runtime's pools: for the servicer and consumers.

    `clock` judges working-memory expiry: the system clock, unless a test holds time."""
    settings = rt.settings
    assert rt.redis is not None, "memory uses Redis (settings require redis_url)"
    store = PostgresMemoryStore(rt.db, events)
    working = WorkingMemory(
        rt.redis,
        store,
        default_ttl=settings.working_ttl_seconds,
        max_items=settings.working_max_items,
        clock=clock or SystemClock(),
    )
    return store, working


async def build(rt: Runtime[MemorySettings], clock: Clock | None = None) -> list[GrpcService]:
    """`clock` judges working-memory expiry: the system clock, unless a test holds time."""
    settings = rt.settings
    store, working = stores(rt, await start_service_events(rt), clock)
    missing = await store.settings_missing(session_settings(settings.recall_candidates))
    if missing:
        # Startup parameters dropped on the way (a pooler that ignores them): recall would still
        # answer, but a filtered vector-index walk could come back short. Refuse to start.
        got = ", ".join(
            f"{name} is {'not set' if value is None else repr(value)}"
            for name, value in missing.items()
        )
        raise RuntimeError(
            f"memory's database connections do not carry the settings recall needs ({got}): "
            "something between the service and PostgreSQL drops their startup parameters; "
            "point EDRS_MEMORY_DATABASE_URL at PostgreSQL or at a pooler that passes them"
        )
    stored = await store.embedding_dimensions()
    if stored != settings.embedding_dimensions:
        raise RuntimeError(
            f"EDRS_MEMORY_EMBEDDING_DIMENSIONS is {settings.embedding_dimensions} but the episodes "
            f"table stores vector({stored}); a new migration must change the column first"
        )
    policy = RecallPolicy(
        half_life=timedelta(days=settings.recall_half_life_days),
        nearest=settings.recall_candidates,
        recent=settings.recall_recent,
    )
    embedder: Embedder = GrpcEmbedder(
        rt.peers.stub(reasoning_pb2_grpc.ReasoningServiceStub), settings.embedding_dimensions
    )
    if settings.embedding_cache_size:
        embedder = CachingEmbedder(embedder, settings.embedding_cache_size)
    await maintain(rt.db, retention_days=settings.episode_retention_days)
    rt.spawn(
        run_maintenance(
            rt.db,
            retention_days=settings.episode_retention_days,
            interval=settings.maintenance_interval_seconds,
        ),
        "memory-maintenance",
    )
    late = LateEmbeddings(rt.db, embedder, interval=settings.late_embedding_interval_seconds)
    rt.spawn(late.run(), "memory-late-embedding")
    servicer = MemoryServicer(store, working, embedder, policy, late)
    return [
        GrpcService(
            memory_pb2.DESCRIPTOR.services_by_name["MemoryService"].full_name,
            servicer,
            memory_pb2_grpc.add_MemoryServiceServicer_to_server,
        )
    ]


async def erase_user(delivery: ConsumedEvent[MemorySettings]) -> None:
    rt = delivery.runtime
    store, working = stores(rt, ServiceEvents(rt.settings.service_name))
    await erasure.erase_user(delivery, store, working)


definition = ServiceDefinition(
    settings_cls=MemorySettings,
    build=build,
    migrations=files("edrs_memory") / "migrations",
    database_settings=lambda settings: session_settings(settings.recall_candidates),
    local_ports=LocalPorts(grpc=50053, http=8104, metrics=8105),
    consumers=[
        # An erase must not give up soon: ten tries, the last ones 30 s apart, then the DLQ.
        Consumer(
            erasure.CONSUMER, ["gateway.user_deleted"], erase_user, ConsumerOptions(max_deliver=10)
        ),
    ],
)

"""Wires the knowledge service: its store, vector and keyword indexes, the ingestion workers, the
searcher and the gRPC servicer."""

from importlib.resources import files

from edrs_core import GrpcService, LocalPorts, Runtime, ServiceDefinition
from edrs_core.events import start_service_events
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2_grpc
from edrs_vectors import IndexSpec, Metric, open_vector_index

from edrs_knowledge.chunking import Chunker
from edrs_knowledge.config import KnowledgeSettings
from edrs_knowledge.embeddings import BatchEmbedder
from edrs_knowledge.gaps import SearchLog
from edrs_knowledge.graph_model import ModelExtractor
from edrs_knowledge.ingestion import Ingestion
from edrs_knowledge.keyword import KeywordIndex
from edrs_knowledge.search import Fusion, Searcher
from edrs_knowledge.server import KnowledgeServicer
from edrs_knowledge.store.postgres import PostgresKnowledgeStore


async def build(rt: Runtime[KnowledgeSettings]) -> list[GrpcService]:
    settings = rt.settings
    store = PostgresKnowledgeStore(rt.db, await start_service_events(rt))
    vectors = await open_vector_index(
        settings.vector_engine,
        settings.vector_url or settings.database_url,
        IndexSpec(settings.vector_index_name, settings.embedding_dimensions, Metric.COSINE),
        api_key=settings.vector_api_key.get_secret_value() if settings.vector_api_key else None,
    )
    rt.on_close(vectors.close)
    keywords = KeywordIndex.open(settings.keyword_index_path)
    rt.on_close(keywords.close)
    reasoning = rt.peers.stub(reasoning_pb2_grpc.ReasoningServiceStub)
    embedder = BatchEmbedder(
        reasoning,
        dimensions=settings.embedding_dimensions,
        batch_size=settings.embed_batch_size,
        timeout=settings.embed_timeout_seconds,
    )
    ingestion = Ingestion(
        store,
        embedder,
        vectors,
        keywords,
        Chunker(max_tokens=settings.chunk_max_tokens, overlap=settings.chunk_overlap_tokens),
        concurrency=settings.ingest_concurrency,
        max_bytes=settings.max_document_bytes,
        extract_graph=settings.graph_extraction,
        graph_model=ModelExtractor(
            reasoning,
            concurrency=settings.graph_model_concurrency,
            max_passages=settings.graph_model_max_passages,
            max_tokens=settings.graph_model_max_tokens,
            timeout=settings.graph_model_timeout_seconds,
        )
        if settings.graph_extraction and settings.graph_extractor == "model"
        else None,
    )
    await ingestion.sync_keyword_index()
    rt.spawn(ingestion.run(), "knowledge-ingestion")
    searcher = Searcher(
        store,
        embedder,
        vectors,
        keywords,
        rrf_k=settings.rrf_k,
        candidates=settings.search_candidates,
        graph=settings.graph_expansion,
        fusion=Fusion(settings.fusion),
        keyword_weight_matched=settings.keyword_weight_matched,
        keyword_weight_unmatched=settings.keyword_weight_unmatched,
        graph_weight=settings.graph_weight,
    )
    search_log = SearchLog(rt.db, retention_days=settings.search_log_retention_days)
    rt.on_close(search_log.flush)
    servicer = KnowledgeServicer(
        store,
        ingestion,
        searcher,
        max_document_bytes=settings.max_document_bytes,
        search_log=search_log,
        gap_similarity=settings.gap_similarity,
    )
    return [
        GrpcService(
            knowledge_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name,
            servicer,
            knowledge_pb2_grpc.add_KnowledgeServiceServicer_to_server,
        )
    ]


definition = ServiceDefinition(
    settings_cls=KnowledgeSettings,
    build=build,
    migrations=files("edrs_knowledge") / "migrations",
    local_ports=LocalPorts(grpc=50054, http=8106, metrics=8107),
)

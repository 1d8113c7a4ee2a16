"""Knowledge service settings (`EDRS_KNOWLEDGE_*`)."""

import hashlib
import tempfile
from pathlib import Path
from typing import ClassVar, Literal

from edrs_core import ServiceSettings
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict


class KnowledgeSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="EDRS_KNOWLEDGE_")
    service_name: ClassVar[str] = "knowledge"
    uses_redis: ClassVar[bool] = False

    vector_engine: Literal["pgvector", "milvus", "qdrant", "weaviate"] = Field(
        default="pgvector",
        description="Engine of the passages' vector index (edrs-vectors); pgvector is the default",
    )
    vector_url: str = Field(
        default="",
        description=(
            "Address of the vector engine: empty for pgvector means the service's own database; "
            "milvus http://host:19530 or a .db path (Milvus Lite); qdrant http://host:6333 or "
            "path:/folder (local mode); weaviate http://host:8080?grpc_port=50051"
        ),
    )
    vector_api_key: SecretStr | None = Field(
        default=None, description="API key or token of the vector engine, when it needs one"
    )
    vector_index_name: str = Field(
        default="knowledge_chunks", description="Name of the index (table, engine collection)"
    )
    keyword_index_dir: Path | None = Field(
        default=None,
        description=(
            "Folder of the tantivy keyword index; derived data, rebuilt from the database when "
            "missing. Unset: a folder in the temporary directory named after the database URL"
        ),
    )
    embedding_dimensions: int = Field(
        default=384, ge=1, description="Length of the reasoning service's embeddings"
    )
    embed_batch_size: int = Field(
        default=32, ge=1, le=512, description="Passages sent to reasoning's Embed per call"
    )
    embed_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Deadline of one Embed call (a batch on a small CPU)"
    )
    ingest_concurrency: int = Field(
        default=2, ge=1, le=64, description="Documents parsed, embedded and indexed at once"
    )
    max_document_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1, description="Largest document accepted, in bytes"
    )
    chunk_max_tokens: int = Field(
        default=254, ge=8, le=8192, description="Token budget of a passage (word pieces)"
    )
    chunk_overlap_tokens: int = Field(
        default=32, ge=0, le=4096, description="Tokens a passage repeats from the previous one"
    )
    rrf_k: int = Field(
        default=60, ge=1, le=10_000, description="The k constant of reciprocal rank fusion"
    )
    search_candidates: int = Field(
        default=50,
        ge=1,
        le=1_000,
        description="Passages each ranking (vector, keyword) contributes to hybrid fusion",
    )

    fusion: Literal["adaptive", "rrf"] = Field(
        default="adaptive",
        description=(
            "How hybrid search fuses its rankings: adaptive (a convex combination of normalised "
            "scores whose keyword weight follows how much of the query the best keyword "
            "passages hold) or rrf (reciprocal rank fusion); docs/knowledge.md, Ranking"
        ),
    )
    keyword_weight_matched: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="Adaptive fusion: keyword's weight when a passage holds every query term",
    )
    keyword_weight_unmatched: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Adaptive fusion: keyword's weight when no passage holds a query term",
    )
    graph_weight: float = Field(
        default=0.25,
        ge=0.0,
        le=1.0,
        description="Adaptive fusion: the weight of graph expansion's normalised score",
    )
    search_log_retention_days: int = Field(
        default=90,
        ge=0,
        le=3_650,
        description=(
            "Days a recorded search (its query, collections, best scores, origin) is kept for "
            "learning gaps; 0 records nothing"
        ),
    )
    gap_similarity: float = Field(
        default=0.5,
        ge=-1.0,
        le=1.0,
        description=(
            "Learning gaps' default threshold: a search whose best vector similarity is below it "
            "(or that found nothing) answered poorly"
        ),
    )

    graph_extraction: bool = Field(
        default=True,
        description="Extract entities and relations from passages at ingestion",
    )
    graph_extractor: Literal["rules", "model"] = Field(
        default="rules",
        description=(
            "Who reads the graph: rules only, or model: the rules plus the reasoning service's "
            "chat model reading each passage under a JSON Schema (worth it with a capable model "
            "behind reasoning, not the embedded small one; docs/knowledge.md)"
        ),
    )
    graph_model_concurrency: int = Field(
        default=2, ge=1, le=64, description="Passages the model reads at once, across the service"
    )
    graph_model_max_passages: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Passages of one document the model reads (the first); the rest: rules only",
    )
    graph_model_max_tokens: int = Field(
        default=512,
        ge=64,
        le=32_768,
        description="Token budget of the model's answer for one passage (capped by reasoning's)",
    )
    graph_model_timeout_seconds: float = Field(
        default=120.0, gt=0, description="Deadline of the model's reading of one passage"
    )
    graph_expansion: bool = Field(
        default=True,
        description="Rank the neighbourhood of the query's entities into hybrid search",
    )

    @model_validator(mode="after")
    def _overlap_fits(self) -> "KnowledgeSettings":
        if self.chunk_overlap_tokens > self.chunk_max_tokens // 2:
            raise ValueError(
                f"{self.env_name('chunk_overlap_tokens')} ({self.chunk_overlap_tokens}) must be "
                f"at most half of {self.env_name('chunk_max_tokens')} ({self.chunk_max_tokens})"
            )
        return self

    @model_validator(mode="after")
    def _model_reads_with_the_rules(self) -> "KnowledgeSettings":
        if self.graph_extractor == "model" and not self.graph_extraction:
            raise ValueError(
                f"{self.env_name('graph_extractor')}=model adds the model to the rules' "
                f"extraction, which {self.env_name('graph_extraction')}=false turns off"
            )
        return self

    @property
    def keyword_index_path(self) -> Path:
        """The keyword index's folder. By default one per database (the /tmp of a container, the
        temporary directory of a laptop): two fleets on one machine never share a writer."""
        if self.keyword_index_dir is not None:
            return self.keyword_index_dir
        digest = hashlib.sha256(self.database_url.encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"edrs-knowledge-{digest}" / "keyword-index"

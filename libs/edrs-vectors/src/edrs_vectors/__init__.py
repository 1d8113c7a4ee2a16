"""The shared vector-index port: one interface for vector search, an adapter per engine.

Adapters live in their own modules, each importing only its own client (`edrs_vectors.pgvector`,
`.milvus`, `.qdrant`, `.weaviate`); `open_vector_index` picks one by name, as a setting would.
"""

from edrs_vectors._open import ENGINES, open_vector_index
from edrs_vectors._port import (
    MAX_K,
    MAX_PAYLOAD_BYTES,
    CheckedRecord,
    IndexMismatch,
    IndexSpec,
    InvalidVectorInput,
    Metric,
    Rejection,
    UpsertResult,
    VectorHit,
    VectorIndex,
    VectorIndexError,
    VectorRecord,
    brute_force_scores,
    engine_key,
)

__all__ = [
    "ENGINES",
    "MAX_K",
    "MAX_PAYLOAD_BYTES",
    "CheckedRecord",
    "IndexMismatch",
    "IndexSpec",
    "InvalidVectorInput",
    "Metric",
    "Rejection",
    "UpsertResult",
    "VectorHit",
    "VectorIndex",
    "VectorIndexError",
    "VectorRecord",
    "brute_force_scores",
    "engine_key",
    "open_vector_index",
]

"""The embeddings port: memory turns texts into vectors by asking the reasoning service."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from edrs_core.errors import FailedPrecondition
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

Vector = list[float]


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One vector per text, in order; one round trip for the whole batch."""
        ...


class GrpcEmbedder:
    """`Embedder` over the reasoning service's `Embed` RPC, checking every vector's length. A
    failed call raises what edrs_core maps the reasoning service's status to (Unavailable naming
    it when it is down)."""

    def __init__(
        self, reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub, dimensions: int
    ) -> None:
        self.reasoning = reasoning
        self.dimensions = dimensions

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        reply = await self.reasoning.Embed(reasoning_pb2.EmbedRequest(texts=list(texts)))
        vectors = [list(e.values) for e in reply.embeddings]
        if len(vectors) != len(texts):
            raise FailedPrecondition(
                f"reasoning Embed returned {len(vectors)} vectors for {len(texts)} texts"
            )
        for vector in vectors:
            check_dimensions(vector, self.dimensions)
        return vectors


class CachingEmbedder:
    """Remembers the vectors of the last `size` texts: a turn embeds the user's message for
    recall and again when the turn is stored, and the model is deterministic, so the second
    time is free. Misses go to the wrapped embedder in one call."""

    def __init__(self, inner: Embedder, size: int) -> None:
        self.inner = inner
        self.size = size
        self._cache: OrderedDict[str, Vector] = OrderedDict()

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        # Hits are taken before the await: another call may evict them meanwhile.
        found = {t: self._cache[t] for t in texts if t in self._cache}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            found.update(zip(missing, await self.inner.embed(missing), strict=True))
        for text, vector in found.items():
            self._cache[text] = vector
            self._cache.move_to_end(text)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return [found[t] for t in texts]


def check_dimensions(vector: Sequence[float], dimensions: int) -> None:
    if len(vector) != dimensions:
        raise FailedPrecondition(
            f"embedding has {len(vector)} dimensions but memory is configured for {dimensions} "
            "(EDRS_MEMORY_EMBEDDING_DIMENSIONS must match the reasoning service's embedding model)"
        )


def vector_literal(vector: Sequence[float]) -> str:
    """pgvector's text form, '[0.1,0.2,...]': sent as text so no extra codec is needed."""
    # 7 significant digits: the float32 precision the model produces, in half the characters.
    return "[" + ",".join(format(x, ".7g") for x in vector) + "]"

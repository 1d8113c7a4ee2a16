"""Passages and queries to vectors, through the reasoning service's `Embed` RPC, in batches."""

from __future__ import annotations

from collections.abc import Sequence

from edrs_core.errors import FailedPrecondition
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc


class BatchEmbedder:
    """Embeds any number of texts with one `Embed` call per `batch_size` of them, in order (the
    reasoning service runs the model on its CPU or GPU; batches amortise each call's cost).
    A vector of the wrong length is a configuration error, named."""

    def __init__(
        self,
        reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub,
        *,
        dimensions: int,
        batch_size: int,
        timeout: float,
    ) -> None:
        self.reasoning = reasoning
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.timeout = timeout
        # Texts embedded since start: what re-ingestion saves is visible in the metrics and tests.
        self.embedded = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            reply = await self.reasoning.Embed(
                reasoning_pb2.EmbedRequest(texts=batch), timeout=self.timeout
            )
            got = [list(e.values) for e in reply.embeddings]
            if len(got) != len(batch):
                raise FailedPrecondition(
                    f"reasoning Embed returned {len(got)} vectors for {len(batch)} texts"
                )
            for vector in got:
                if len(vector) != self.dimensions:
                    raise FailedPrecondition(
                        f"embedding has {len(vector)} dimensions but knowledge is configured for "
                        f"{self.dimensions} (EDRS_KNOWLEDGE_EMBEDDING_DIMENSIONS must match the "
                        "reasoning service's embedding model)"
                    )
            vectors.extend(got)
            self.embedded += len(batch)
        return vectors

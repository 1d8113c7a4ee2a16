"""The embeddings port: memory turns texts into vectors by asking the reasoning service."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import grpc
from edrs_core.errors import FailedPrecondition, Unavailable
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

Vector = list[float]


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One vector per text, in order; one round trip for the whole batch."""
        ...


class GrpcEmbedder:
    """`Embedder` over the reasoning service's `Embed` RPC, checking every vector's length."""

    def __init__(self, channel: Callable[[], grpc.aio.Channel], dimensions: int) -> None:
        # The channel is asked for on first use: peers are connected lazily.
        self._channel = channel
        self.dimensions = dimensions

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        stub = reasoning_pb2_grpc.ReasoningServiceStub(self._channel())
        try:
            reply = await stub.Embed(reasoning_pb2.EmbedRequest(texts=list(texts)))
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"embeddings unavailable: reasoning Embed failed with {exc.code().name}: "
                f"{exc.details()}"
            ) from exc
        vectors = [list(e.values) for e in reply.embeddings]
        if len(vectors) != len(texts):
            raise FailedPrecondition(
                f"reasoning Embed returned {len(vectors)} vectors for {len(texts)} texts"
            )
        for vector in vectors:
            check_dimensions(vector, self.dimensions)
        return vectors


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

"""The reasoning service's model description, read again only after a while: every caller that
prices or sizes a model call (persona turns, workflow steps) needs it, and it changes only when
reasoning is redeployed."""

from __future__ import annotations

import time

from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc


class ModelInfoCache:
    """reasoning.GetModelInfo, asked again only after `ttl` seconds."""

    def __init__(self, reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub, ttl: float) -> None:
        self.reasoning = reasoning
        self.ttl = ttl
        self._value: reasoning_pb2.ModelInfo | None = None
        self._at = 0.0

    async def get(self) -> reasoning_pb2.ModelInfo:
        now = time.monotonic()
        if self._value is None or now - self._at > self.ttl:
            self._value = await self.reasoning.GetModelInfo(reasoning_pb2.GetModelInfoRequest())
            self._at = now
        return self._value

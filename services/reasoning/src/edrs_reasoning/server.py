"""The reasoning gRPC servicer: reads the caller's tenant's reasoning traces."""

from __future__ import annotations

import grpc
from edrs_core import NotFound
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

from edrs_reasoning.store import Trace, TraceStore


def to_proto(t: Trace) -> reasoning_pb2.Trace:
    return reasoning_pb2.Trace(
        id=str(t.id),
        strategy=t.strategy,
        prompt=t.prompt,
        answer=t.answer,
        confidence=t.confidence,
        prompt_tokens=t.prompt_tokens,
        completion_tokens=t.completion_tokens,
        duration_ms=t.duration_ms,
        create_time=timestamp(t.created_at),
    )


class ReasoningServicer(reasoning_pb2_grpc.ReasoningServiceServicer):
    def __init__(self, store: TraceStore) -> None:
        self.store = store

    async def GetTrace(  # noqa: N802 (gRPC method name)
        self, request: reasoning_pb2.GetTraceRequest, context: grpc.aio.ServicerContext
    ) -> reasoning_pb2.Trace:
        client_id = require_client_id()
        trace = await self.store.get(client_id, parse_id(request.id))
        if trace is None:
            raise NotFound(f"trace {request.id} not found")
        return to_proto(trace)

    async def ListTraces(  # noqa: N802
        self, request: reasoning_pb2.ListTracesRequest, context: grpc.aio.ServicerContext
    ) -> reasoning_pb2.ListTracesResponse:
        client_id = require_client_id()
        traces, token = await self.store.list(
            client_id, request.page.page_token, request.page.page_size
        )
        return reasoning_pb2.ListTracesResponse(
            traces=[to_proto(t) for t in traces],
            page=common_pb2.PageInfo(next_page_token=token),
        )

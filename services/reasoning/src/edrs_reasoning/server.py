"""The reasoning gRPC servicer: model calls, embeddings and the caller's tenant's traces."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from edrs_core import NotFound, ServicerContext
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

from edrs_reasoning import requests
from edrs_reasoning.backends.base import ChatBackend
from edrs_reasoning.config import ReasoningSettings
from edrs_reasoning.embeddings import Embedder
from edrs_reasoning.reasoner import Outcome, Reasoner
from edrs_reasoning.store import Trace, TraceStore
from edrs_reasoning.voice.speech import Speech


def _timings(values: dict[str, float]) -> reasoning_pb2.Timings:
    return reasoning_pb2.Timings(
        queue_ms=values.get("queue_ms", 0.0),
        first_token_ms=values.get("first_token_ms", 0.0),
        generation_ms=values.get("generation_ms", 0.0),
        total_ms=values.get("total_ms", 0.0),
    )


def _options(values: Mapping[str, Any]) -> reasoning_pb2.GenerationOptions:
    options = reasoning_pb2.GenerationOptions(
        max_tokens=int(values.get("max_tokens", 0)), stop=[str(s) for s in values.get("stop", [])]
    )
    if "temperature" in values:
        options.temperature = float(values["temperature"])
    if "top_p" in values:
        options.top_p = float(values["top_p"])
    if "seed" in values:
        options.seed = int(values["seed"])
    if "json_schema" in values:
        options.json_schema = json.dumps(values["json_schema"], sort_keys=True)
    return options


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
        messages=[
            reasoning_pb2.ChatMessage(role=m["role"], content=m["content"]) for m in t.messages
        ],
        context=[
            reasoning_pb2.ContextItem(
                id=c["id"], source=c["source"], text=c["text"], score=c["score"]
            )
            for c in t.context
        ],
        samples=[
            reasoning_pb2.Sample(
                text=s.text,
                answer=s.answer,
                completion_tokens=s.completion_tokens,
                generation_ms=s.generation_ms,
            )
            for s in t.samples
        ],
        unsupported_claims=t.unsupported_claims,
        model=t.model,
        timings=_timings(t.timings),
        labels=t.labels,
        options=_options(t.options),
        draft=t.draft,
    )


def _result(outcome: Outcome) -> reasoning_pb2.ReasonResult:
    t = outcome.trace
    return reasoning_pb2.ReasonResult(
        trace_id=str(t.id),
        answer=t.answer,
        confidence=t.confidence,
        unsupported_claims=outcome.unsupported_claims,
        usage=reasoning_pb2.Usage(
            prompt_tokens=t.prompt_tokens, completion_tokens=t.completion_tokens
        ),
        timings=_timings(t.timings),
        model=t.model,
    )


class ReasoningServicer(reasoning_pb2_grpc.ReasoningServiceServicer):
    def __init__(
        self,
        store: TraceStore,
        reasoner: Reasoner,
        backend: ChatBackend,
        embedder: Embedder,
        speech: Speech,
        settings: ReasoningSettings,
    ) -> None:
        self.speech = speech
        self.store = store
        self.reasoner = reasoner
        self.backend = backend
        self.embedder = embedder
        self.settings = settings

    async def Reason(  # noqa: N802 (gRPC method name)
        self, request: reasoning_pb2.ReasonRequest, context: ServicerContext
    ) -> AsyncIterator[reasoning_pb2.ReasonResponse]:
        client_id = require_client_id()
        call = requests.reason_call(request, self.settings)
        async with aclosing(self.reasoner.run(client_id, call)) as run:
            async for item in run:
                if isinstance(item, Outcome):
                    yield reasoning_pb2.ReasonResponse(result=_result(item))
                else:
                    yield reasoning_pb2.ReasonResponse(delta=reasoning_pb2.TokenDelta(text=item))

    async def Embed(  # noqa: N802
        self, request: reasoning_pb2.EmbedRequest, context: ServicerContext
    ) -> reasoning_pb2.EmbedResponse:
        # No tenant needed: no tenant data is read or kept (memory's jobs embed outside a call).
        texts = requests.embed_texts(request.texts)
        vectors = await self.embedder.embed(texts)
        return reasoning_pb2.EmbedResponse(
            embeddings=[reasoning_pb2.Embedding(values=v) for v in vectors],
            model=self.embedder.name,
            dimensions=self.embedder.dimensions,
        )

    async def GetModelInfo(  # noqa: N802
        self, request: reasoning_pb2.GetModelInfoRequest, context: ServicerContext
    ) -> reasoning_pb2.ModelInfo:
        return reasoning_pb2.ModelInfo(
            backend=self.backend.kind,
            chat_model=self.backend.model,
            context_window=self.backend.context_window,
            max_output_tokens=self.settings.max_output_tokens,
            embedding_model=self.embedder.name,
            embedding_dimensions=self.embedder.dimensions,
            transcription_model=self.speech.transcriber.model if self.speech.transcriber else "",
            speech_model=self.speech.synthesizer.model if self.speech.synthesizer else "",
            voices=self.speech.synthesizer.voices if self.speech.synthesizer else [],
        )

    async def Transcribe(  # noqa: N802
        self,
        request_iterator: AsyncIterator[reasoning_pb2.TranscribeRequest],
        context: ServicerContext,
    ) -> reasoning_pb2.TranscribeResponse:
        # No tenant needed, as for Embed: the audio and its text are neither read nor kept here
        # beyond the call.
        return await self.speech.transcribe(request_iterator)

    async def Synthesize(  # noqa: N802
        self, request: reasoning_pb2.SynthesizeRequest, context: ServicerContext
    ) -> AsyncIterator[reasoning_pb2.SynthesizeResponse]:
        async with aclosing(self.speech.synthesize(request)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def GetTrace(  # noqa: N802
        self, request: reasoning_pb2.GetTraceRequest, context: ServicerContext
    ) -> reasoning_pb2.Trace:
        client_id = require_client_id()
        trace = await self.store.get(client_id, parse_id(request.id))
        if trace is None:
            raise NotFound(f"trace {request.id} not found")
        return to_proto(trace)

    async def ListTraces(  # noqa: N802
        self, request: reasoning_pb2.ListTracesRequest, context: ServicerContext
    ) -> reasoning_pb2.ListTracesResponse:
        client_id = require_client_id()
        labels = requests.labels(request.labels)
        traces, token = await self.store.list(
            client_id, request.page.page_token, request.page.page_size, labels
        )
        return reasoning_pb2.ListTracesResponse(
            traces=[to_proto(t) for t in traces],
            page=common_pb2.PageInfo(next_page_token=token),
        )

"""What the side-effect step types do: a model call (reasoning), a knowledge search (knowledge), a
tool call (integration's ToolService, or whatever ToolCaller the service is built with)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from edrs_core import InvalidArgument
from edrs_proto.integration.v1 import tools_pb2, tools_pb2_grpc
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

# A model_call step's `maxTokens` when its definition gives none (definitions.ModelCallWith).
MODEL_CALL_MAX_TOKENS = 256


class StepRefused(Exception):
    """A step that can never succeed as written (retrying will not help): the run fails."""


class ToolFailed(StepRefused):
    """The tool was called and answered with an error: the step fails, and the call counts
    against the budgets like any call that was made."""


class ToolCaller(Protocol):
    """Where tool_call steps go. `unavailable` is None when calls can be made, else the reason."""

    @property
    def unavailable(self) -> str | None: ...

    async def call(
        self, tool: str, arguments: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]: ...


class IntegrationTools:
    """Tool calls through the integration service's ToolService.CallTool (the tenant is the
    run's: the activity binds it). CallTool takes no idempotency key yet: the effects ledger
    keeps a completed call from repeating, a call cut off mid-way may run again."""

    def __init__(self, stub: tools_pb2_grpc.ToolServiceAsyncStub, configured: bool) -> None:
        self.stub = stub
        self.configured = configured

    @property
    def unavailable(self) -> str | None:
        if self.configured:
            return None
        return "no integration service is configured (EDRS_TASK_PEERS has no 'integration')"

    async def call(
        self, tool: str, arguments: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        reply = await self.stub.CallTool(
            tools_pb2.CallToolRequest(name=tool, arguments=json.dumps(arguments))
        )
        if reply.is_error:
            raise ToolFailed(f"tool {tool!r} reported an error: {reply.content[:500]}")
        result: dict[str, Any] = {"content": reply.content}
        if reply.structured:
            result["structured"] = json.loads(reply.structured)
        return result


def model_call_messages(params: dict[str, Any]) -> list[reasoning_pb2.ChatMessage]:
    """The messages a model_call step sends: its system text, if any, and its prompt."""
    messages = []
    if params.get("system"):
        messages.append(reasoning_pb2.ChatMessage(role="system", content=str(params["system"])))
    messages.append(reasoning_pb2.ChatMessage(role="user", content=str(params["prompt"])))
    return messages


class StepExecutors:
    def __init__(
        self,
        reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub,
        knowledge: knowledge_pb2_grpc.KnowledgeServiceAsyncStub,
        tools: ToolCaller,
    ) -> None:
        self.reasoning = reasoning
        self.knowledge = knowledge
        self.tools = tools

    async def run(self, step_type: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        """The step's output; StepRefused when it cannot succeed, any other error is retried."""
        if step_type == "model_call":
            return await self._model_call(params)
        if step_type == "knowledge_search":
            return await self._knowledge_search(params)
        if step_type == "tool_call":
            if self.tools.unavailable:
                raise StepRefused(f"tool_call steps cannot run: {self.tools.unavailable}")
            return await self.tools.call(
                str(params["tool"]), dict(params.get("arguments") or {}), key
            )
        raise StepRefused(f"step type {step_type!r} is not an activity")

    async def _model_call(self, params: dict[str, Any]) -> dict[str, Any]:
        request = reasoning_pb2.ReasonRequest(
            messages=model_call_messages(params),
            strategy=reasoning_pb2.STRATEGY_DIRECT,
            options=reasoning_pb2.GenerationOptions(
                max_tokens=int(params.get("maxTokens", MODEL_CALL_MAX_TOKENS))
            ),
        )
        async for reply in self.reasoning.Reason(request):
            if reply.HasField("result"):
                r = reply.result
                return {
                    "answer": r.answer,
                    "model": r.model,
                    "traceId": r.trace_id,
                    "promptTokens": r.usage.prompt_tokens,
                    "completionTokens": r.usage.completion_tokens,
                }
        raise InvalidArgument("the reasoning service ended the stream without a result")

    async def _knowledge_search(self, params: dict[str, Any]) -> dict[str, Any]:
        reply = await self.knowledge.Search(
            knowledge_pb2.SearchRequest(query=str(params["query"]), k=int(params.get("limit", 5)))
        )
        return {
            "hits": [
                {
                    "documentId": p.document_id,
                    "title": p.title,
                    "snippet": p.text,
                    "page": p.citation.page,
                    "score": p.score,
                }
                for p in reply.passages
            ]
        }

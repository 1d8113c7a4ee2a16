"""The Converse pipeline: one turn of a conversation, from the user's message to the stored reply
(docs/conversation.md, "The turn pipeline").

The turn runs in its own task and the RPC only relays what the task reports, so a client that goes
away mid-turn does not cancel it: the reply is still generated and the turn stored, and memory never
holds a message without the rest of its turn."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from edrs_core import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServiceError,
    Unavailable,
    validation,
)
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.model_info import ModelInfoCache
from edrs_proto.memory.v1 import memory_pb2, memory_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

from edrs_persona import approved_calls, prompt, task_notices, tool_use
from edrs_persona.budgets import Spent, TurnBudgets
from edrs_persona.citations import citations
from edrs_persona.config import PersonaSettings
from edrs_persona.knowledge import KnowledgeSources
from edrs_persona.research import ResearchRequests
from edrs_persona.store import ConversationKey, Persona, PersonaStore
from edrs_persona.tool_use import ApprovalRequest, Tool, ToolRounds, ToolUse
from edrs_persona.turns import Turn, TurnGate, conversation_key

log = logging.getLogger("edrs.persona.conversation")

# Conversation ids are chosen by clients and show up in URLs and trace labels.
_CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
STRATEGIES = {
    "": reasoning_pb2.STRATEGY_DIRECT,
    "direct": reasoning_pb2.STRATEGY_DIRECT,
    "chain_of_thought": reasoning_pb2.STRATEGY_CHAIN_OF_THOUGHT,
    "self_consistency": reasoning_pb2.STRATEGY_SELF_CONSISTENCY,
}
MAX_USER_ID = 200
MAX_TEXT = 20_000


def conversation_id(value: str, field: str = "conversation_id") -> str:
    if not _CONVERSATION_ID.match(value):
        raise InvalidArgument(
            f"{field} must be 1..100 characters of A-Z, a-z, 0-9, '.', '_', ':' or '-', "
            f"got {value[:120]!r}",
            field=field,
        )
    return value


def user_id(value: str) -> str:
    return validation.text(value, "user_id", max_length=MAX_USER_ID)


@dataclass(frozen=True)
class TurnRequest:
    key: ConversationKey
    text: str
    strategy: reasoning_pb2.Strategy.ValueType
    max_tokens: int
    temperature: float | None


def validate(request: persona_pb2.ConverseRequest, client_id: str) -> TurnRequest:
    persona_id = parse_id(request.persona_id, "persona_id")
    conv = conversation_id(request.conversation_id)
    user = user_id(request.user_id)
    text = validation.text(request.text, "text", max_length=MAX_TEXT)
    options = request.options
    if options.strategy not in STRATEGIES:
        raise InvalidArgument(
            "options.strategy must be one of direct, chain_of_thought, self_consistency, "
            f"got {options.strategy[:64]!r}",
            field="options.strategy",
        )
    if options.max_tokens < 0:
        raise InvalidArgument(
            f"options.max_tokens must not be negative, got {options.max_tokens}",
            field="options.max_tokens",
        )
    temperature = None
    if options.HasField("temperature"):
        temperature = validation.float_range(
            options.temperature, "options.temperature", low=0.0, high=2.0
        )
    return TurnRequest(
        key=ConversationKey(
            client_id=client_id, persona_id=persona_id, user_id=user, conversation_id=conv
        ),
        text=text,
        strategy=STRATEGIES[options.strategy],
        max_tokens=options.max_tokens,
        temperature=temperature,
    )


def _ms(start: float, end: float | None = None) -> float:
    return ((time.perf_counter() if end is None else end) - start) * 1e3


Emit = Callable[[persona_pb2.ConverseEvent | BaseException | None], None]


class Conversations:
    def __init__(
        self,
        store: PersonaStore,
        memory: memory_pb2_grpc.MemoryServiceAsyncStub,
        reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub,
        knowledge: KnowledgeSources,
        gate: TurnGate,
        settings: PersonaSettings,
        budgets: TurnBudgets | None = None,
        tool_use: ToolUse | None = None,
        research: ResearchRequests | None = None,
    ) -> None:
        self.research = research or ResearchRequests(None)
        self.store = store
        self.budgets = budgets or TurnBudgets(None)
        self.memory = memory
        self.reasoning = reasoning
        self.knowledge = knowledge
        self.gate = gate
        self.settings = settings
        self.tool_use = tool_use
        self.model_info = ModelInfoCache(reasoning, settings.model_info_cache_seconds)
        self._turns: set[asyncio.Task[None]] = set()

    async def converse(self, request: persona_pb2.ConverseRequest) -> AsyncIterator[Any]:
        """Relay the events of one turn, which runs in its own task (see the module docstring)."""
        events: asyncio.Queue[persona_pb2.ConverseEvent | BaseException | None] = asyncio.Queue()
        task = asyncio.create_task(self._run(request, events.put_nowait))
        self._turns.add(task)
        task.add_done_callback(self._turns.discard)
        while (item := await events.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    async def drain(self, grace: float) -> None:
        """At shutdown: let running turns finish within `grace`, then cancel the rest."""
        if not self._turns:
            return
        _, pending = await asyncio.wait(set(self._turns), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self, request: persona_pb2.ConverseRequest, emit: Emit) -> None:
        try:
            await self._turn(request, emit)
        except asyncio.CancelledError:
            emit(Unavailable("the persona service is shutting down; the turn was not finished"))
        except BaseException as exc:
            emit(exc)
        finally:
            emit(None)

    async def _persona(self, client_id: str, persona_id: UUID) -> Persona:
        persona = await self.store.get(client_id, persona_id)
        if persona is None:
            raise NotFound(f"persona {persona_id} not found")
        if not persona.active:
            raise FailedPrecondition(f"persona {persona_id} is archived and takes no new messages")
        return persona

    async def _turn(self, request: persona_pb2.ConverseRequest, emit: Emit) -> None:
        started = time.perf_counter()
        req = validate(request, require_client_id())
        key = req.key
        persona = await self._persona(key.client_id, key.persona_id)
        # Everything that can refuse the message does so before it is stored.
        info = await self.model_info.get()
        max_tokens = self._max_tokens(req.max_tokens, info)
        budget = prompt.Budget(info.context_window, max_tokens, self.settings.prompt_safety_margin)
        prompt.require_fits(persona, req.text, budget)

        turn = await self.gate.reserve(
            conversation_key(key.client_id, str(key.persona_id), key.user_id, key.conversation_id),
            key.conversation_id,
        )
        try:
            await self._take_turn(req, persona, budget, turn, started, emit)
        finally:
            await asyncio.shield(turn.finish())

    def _max_tokens(self, asked: int, info: reasoning_pb2.ModelInfo) -> int:
        ceiling = info.max_output_tokens or self.settings.default_max_tokens
        if asked > ceiling:
            raise InvalidArgument(
                f"options.max_tokens must be at most {ceiling} for model {info.chat_model}, "
                f"got {asked}",
                field="options.max_tokens",
            )
        return asked or min(self.settings.default_max_tokens, ceiling)

    async def _take_turn(
        self,
        req: TurnRequest,
        persona: Persona,
        budget: prompt.Budget,
        turn: Turn,
        started: float,
        emit: Emit,
    ) -> None:
        key = req.key
        message = await self.store.add_user_message(key, req.text)
        emit(
            persona_pb2.ConverseEvent(
                accepted=persona_pb2.MessageAccepted(message_id=str(message.id))
            )
        )

        queued_at = time.perf_counter()
        if turn.ahead:
            emit(persona_pb2.ConverseEvent(queued=persona_pb2.TurnQueued(ahead=turn.ahead)))
        await turn.wait()
        queue_ms = _ms(queued_at)
        emit(persona_pb2.ConverseEvent(started=persona_pb2.TurnStarted()))
        # An explicit "research: ..." starts a research job; the reply ends saying so.
        research_note = await self.research.start(persona, req.text)

        t = time.perf_counter()
        # Two groups, because asyncio.gather is typed for at most six awaitables.
        (
            (facts, recalled, history),
            (coworkers, relationship, notices, sources, outcomes),
        ) = await asyncio.gather(
            asyncio.gather(self._facts(key), self._recall(key, req.text), self._history(key)),
            asyncio.gather(
                self.store.list_coworkers(key.client_id, key.persona_id),
                self.store.get_relationship(key.client_id, key.persona_id, key.user_id),
                self.store.untold_task_notices(
                    key.client_id, key.persona_id, key.user_id, task_notices.PER_TURN
                ),
                self.knowledge.search(persona, req.text),
                # Held tool calls of this conversation decided since its last turn.
                self.store.untold_call_outcomes(key, approved_calls.PER_TURN),
            ),
        )
        recall_ms = _ms(t)

        t = time.perf_counter()
        assembled = prompt.assemble(
            persona,
            user_text=req.text,
            budget=budget,
            facts=facts,
            memories=recalled,
            history=[item for item in history if item.kind == "message"],
            notes=relationship.notes,
            coworkers=[c for c in coworkers if c.coworker_status == "active"],
            tasks=[task_notices.notice_line(n) for n in notices],
            sources=sources,
        )
        if outcomes:
            approved_calls.tell(assembled.messages, assembled.context, outcomes)
            assembled.estimated_tokens = prompt.estimate_messages(assembled.messages)
        prompt_ms = _ms(t)

        result: reasoning_pb2.ReasonResult | None = None
        try:
            rounds = await self._tool_rounds(req, persona, message.id, assembled, emit)
            if rounds.calls:
                assembled.messages = tool_use.answer_messages(assembled.messages, rounds)
                assembled.context = [*assembled.context, *rounds.context]
                assembled.estimated_tokens = prompt.estimate_messages(assembled.messages)
            info = await self.model_info.get()
            async with self.budgets.spend(
                self.budgets.key(message.id),
                key.persona_id,
                model=info.chat_model,
                tokens=assembled.estimated_tokens + budget.max_tokens,
            ) as spent:
                result = spent.result = await self._generate(
                    req, message.id, budget, assembled, emit
                )
        except ServiceError:
            # The user's message still belongs to the conversation's memory (and may state facts).
            await asyncio.shield(self._record_failed_turn(key, req.text))
            raise

        answer = result.answer
        if research_note:
            addition = ("\n\n" if answer else "") + research_note
            emit(persona_pb2.ConverseEvent(delta=persona_pb2.ReplyDelta(text=addition)))
            answer += addition
        t = time.perf_counter()
        recorded = await self.memory.RecordTurn(
            memory_pb2.RecordTurnRequest(
                persona_id=str(key.persona_id),
                user_id=key.user_id,
                conversation_id=key.conversation_id,
                user_text=req.text,
                reply_text=answer,
                trace_id=result.trace_id,
            ),
            timeout=self.settings.memory_timeout_seconds,
        )
        reply = await self.store.add_reply(key, answer, result.trace_id, _ms(started))
        if assembled.tasks:
            await self.store.mark_task_notices_told(
                key.client_id, [notices[i].task_id for i in assembled.tasks]
            )
        if outcomes:
            await self.store.mark_call_outcomes_told(
                key.client_id, [c.approval_id for c in outcomes]
            )
        store_ms = _ms(t)

        total_ms = _ms(started)
        generation_ms = result.timings.generation_ms
        emit(
            persona_pb2.ConverseEvent(
                completed=persona_pb2.TurnCompleted(
                    message_id=str(reply.id),
                    reply=answer,
                    trace_id=result.trace_id,
                    recalled=assembled.memories,
                    facts=assembled.facts,
                    learned=recorded.learned,
                    citations=citations(assembled.sources, result.answer),
                    prompt_tokens=result.usage.prompt_tokens,
                    completion_tokens=result.usage.completion_tokens,
                    tool_calls=rounds.calls,
                    timings=persona_pb2.TurnTimings(
                        queue_ms=queue_ms,
                        recall_ms=recall_ms,
                        prompt_ms=prompt_ms,
                        generation_ms=generation_ms,
                        store_ms=store_ms,
                        total_ms=total_ms,
                        overhead_ms=max(0.0, total_ms - generation_ms - queue_ms),
                    ),
                )
            )
        )

    async def _tool_rounds(
        self,
        req: TurnRequest,
        persona: Persona,
        message_id: UUID,
        assembled: prompt.Prompt,
        emit: Emit,
    ) -> ToolRounds:
        """The turn's tool calls, before the answer; none when the persona has no usable tool."""
        if self.tool_use is None or not persona.tools:
            return ToolRounds()
        tools = await self.tool_use.available(persona.tools)
        if not tools:
            return ToolRounds()
        key = req.key
        info = await self.model_info.get()
        max_tokens = min(
            self.settings.tool_decision_max_tokens,
            info.max_output_tokens or self.settings.tool_decision_max_tokens,
        )

        async def decide(
            messages: list[reasoning_pb2.ChatMessage], schema: str, round_number: int
        ) -> str:
            options = reasoning_pb2.GenerationOptions(
                max_tokens=max_tokens, temperature=0.0, json_schema=schema
            )
            # Each tool decision is a model call of the turn: reserved and settled like the answer.
            async with self.budgets.spend(
                self.budgets.key(message_id, f"decide:{round_number}"),
                key.persona_id,
                model=info.chat_model,
                tokens=prompt.estimate_messages(messages) + max_tokens,
            ) as spent:
                call = self.reasoning.Reason(
                    reasoning_pb2.ReasonRequest(
                        messages=messages,
                        context=assembled.context,
                        strategy=reasoning_pb2.STRATEGY_DIRECT,
                        options=options,
                        labels={
                            "persona_id": str(key.persona_id),
                            "conversation_id": key.conversation_id,
                            "user_id": key.user_id,
                            "message_id": str(message_id),
                            "step": "tool_decision",
                            "tool_round": str(round_number),
                        },
                    ),
                    timeout=self.settings.generation_timeout_seconds,
                )
                async for response in call:
                    if response.HasField("result"):
                        spent.result = response.result
                if spent.result is None:
                    raise Unavailable(
                        "the reasoning service ended the tool decision without a result"
                    )
                return spent.result.answer

        def spend_on_tool(call_id: str) -> AbstractAsyncContextManager[Spent]:
            """A tool call of the turn, reserved (one tool call) and settled."""
            return self.budgets.spend(
                self.budgets.key(message_id, f"tool:{call_id}"), key.persona_id, tool_calls=1
            )

        def approval(
            tool: Tool, arguments: dict[str, Any], reason: str, call_id: str
        ) -> ApprovalRequest:
            return ApprovalRequest(
                persona_id=str(key.persona_id),
                conversation_id=key.conversation_id,
                user_id=key.user_id,
                message_id=str(message_id),
                call_id=call_id,
                tool=tool.name,
                arguments=arguments,
                impact=tool.impact,
                reason=reason,
            )

        return await self.tool_use.run(
            tools,
            persona.tool_policy,
            assembled.messages,
            tainted=tool_use.untrusted(assembled.context),
            decide=decide,
            emit=emit,
            approval=approval,
            spend=spend_on_tool,
        )

    async def _generate(
        self,
        req: TurnRequest,
        message_id: UUID,
        budget: prompt.Budget,
        assembled: prompt.Prompt,
        emit: Emit,
    ) -> reasoning_pb2.ReasonResult:
        key = req.key
        options = reasoning_pb2.GenerationOptions(max_tokens=budget.max_tokens)
        if req.temperature is not None:
            options.temperature = req.temperature
        call = self.reasoning.Reason(
            reasoning_pb2.ReasonRequest(
                messages=assembled.messages,
                context=assembled.context,
                strategy=req.strategy,
                options=options,
                labels={
                    "persona_id": str(key.persona_id),
                    "conversation_id": key.conversation_id,
                    "user_id": key.user_id,
                    "message_id": str(message_id),
                },
            ),
            timeout=self.settings.generation_timeout_seconds,
        )
        result: reasoning_pb2.ReasonResult | None = None
        async for response in call:
            if response.HasField("delta"):
                if response.delta.text:
                    emit(
                        persona_pb2.ConverseEvent(
                            delta=persona_pb2.ReplyDelta(text=response.delta.text)
                        )
                    )
            elif response.HasField("result"):
                result = response.result
        if result is None:
            raise Unavailable("the reasoning service ended the reply without a result")
        return result

    async def _record_failed_turn(self, key: ConversationKey, text: str) -> None:
        try:
            await self.memory.RecordTurn(
                memory_pb2.RecordTurnRequest(
                    persona_id=str(key.persona_id),
                    user_id=key.user_id,
                    conversation_id=key.conversation_id,
                    user_text=text,
                ),
                timeout=self.settings.memory_timeout_seconds,
            )
        except ServiceError as exc:
            log.warning("could not record the failed turn's message: %s", exc.message)

    async def _facts(self, key: ConversationKey) -> list[memory_pb2.Fact]:
        response = await self.memory.ListFacts(
            memory_pb2.ListFactsRequest(persona_id=str(key.persona_id), user_id=key.user_id),
            timeout=self.settings.memory_timeout_seconds,
        )
        # ListFacts without include_superseded lists current facts only.
        return list(response.facts)

    async def _recall(self, key: ConversationKey, text: str) -> list[memory_pb2.ScoredMemory]:
        if self.settings.recall_limit == 0:
            return []
        response = await self.memory.Recall(
            memory_pb2.RecallRequest(
                persona_id=str(key.persona_id),
                user_id=key.user_id,
                query=text,
                limit=self.settings.recall_limit,
                exclude_conversation_id=key.conversation_id,
            ),
            timeout=self.settings.memory_timeout_seconds,
        )
        return list(response.memories)

    async def _history(self, key: ConversationKey) -> list[memory_pb2.WorkingItem]:
        if self.settings.history_items == 0:
            return []
        response = await self.memory.ListWorkingItems(
            memory_pb2.ListWorkingItemsRequest(
                persona_id=str(key.persona_id),
                user_id=key.user_id,
                conversation_id=key.conversation_id,
                limit=self.settings.history_items,
            ),
            timeout=self.settings.memory_timeout_seconds,
        )
        return list(response.items)

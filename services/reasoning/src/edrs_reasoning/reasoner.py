"""Runs one reasoning call: admission, the strategy's generations, and the trace it leaves."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from edrs_core import InvalidArgument
from edrs_core.events import ServiceEvents

from edrs_reasoning import strategies
from edrs_reasoning.backends.base import ChatBackend, GenerationOptions, Message, Usage
from edrs_reasoning.embeddings import Embedder
from edrs_reasoning.requests import ReasonCall
from edrs_reasoning.slots import GenerationSlots
from edrs_reasoning.store import NewTrace, Trace, TraceSample, TraceStore


@dataclass
class Generated:
    """One generation's text and measurements, filled while it streams."""

    text: str = ""
    usage: Usage = field(default_factory=Usage)
    first_token_ms: float | None = None
    generation_ms: float = 0.0


@dataclass(frozen=True)
class Outcome:
    trace: Trace
    unsupported_claims: list[str]


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class Reasoner:
    def __init__(
        self,
        backend: ChatBackend,
        embedder: Embedder,
        slots: GenerationSlots,
        store: TraceStore,
        events: ServiceEvents | None,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.slots = slots
        self.store = store
        self.events = events

    async def run(self, client_id: str, call: ReasonCall) -> AsyncGenerator[str | Outcome, None]:
        """Yield the answer's text deltas, then one Outcome (after the trace is stored)."""
        start = time.perf_counter()
        if call.strategy in (strategies.CHAIN_OF_THOUGHT, strategies.SELF_CONSISTENCY):
            model_messages = strategies.with_chain_of_thought(call.messages)
        else:
            model_messages = list(call.messages)
        # Tokenising up to 10 MB of messages is no job for the event loop.
        prompt_tokens = await asyncio.to_thread(self.backend.count_tokens, model_messages)
        timings = {"queue_ms": 0.0, "first_token_ms": 0.0, "generation_ms": 0.0}
        samples: list[TraceSample] = []
        unsupported: list[str] = []
        confidence = 0.0
        completion_tokens = 0
        model = self.backend.model

        if call.strategy == strategies.VERIFY:
            model = self.embedder.name
            verification = await self._verify(call)
            answer = verification.verdict
            confidence = verification.confidence
            unsupported = verification.unsupported
            yield answer
        else:
            needed = prompt_tokens + call.options.max_tokens
            if needed > self.backend.context_window:
                raise InvalidArgument(
                    f"the prompt is {prompt_tokens} tokens and options.max_tokens is "
                    f"{call.options.max_tokens}: together {needed}, more than the model's context "
                    f"window of {self.backend.context_window} tokens",
                    field="messages",
                )
            async with self.slots.acquire() as queue_ms:
                timings["queue_ms"] = queue_ms
                if call.strategy == strategies.SELF_CONSISTENCY:
                    runs = await self._self_consistency(model_messages, call)
                    answers = [strategies.extract_answer(g.text) for g in runs]
                    vote = strategies.majority_vote(answers)
                    confidence = vote.confidence
                    answer = answers[vote.winner]
                    samples = [_sample(g, a) for g, a in zip(runs, answers, strict=True)]
                    if runs[vote.winner].text:
                        yield runs[vote.winner].text
                else:
                    generated = Generated()
                    async for delta in self._generate(model_messages, call.options, generated):
                        yield delta
                    runs = [generated]
                    if call.strategy == strategies.CHAIN_OF_THOUGHT:
                        answer = strategies.extract_answer(generated.text)
                    else:
                        answer = generated.text
                    samples = [_sample(generated, answer)]
            timings["first_token_ms"] = next(
                (g.first_token_ms for g in runs if g.first_token_ms is not None), 0.0
            )
            timings["generation_ms"] = sum(g.generation_ms for g in runs)
            completion_tokens = sum(g.usage.completion_tokens for g in runs)
            # A server's own count replaces the estimate when it reports one.
            prompt_tokens = runs[0].usage.prompt_tokens or prompt_tokens

        timings["total_ms"] = _ms_since(start)
        trace = NewTrace(
            strategy=call.strategy,
            prompt=strategies.render_prompt(model_messages),
            answer=answer,
            confidence=confidence,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            duration_ms=timings["total_ms"],
            messages=[{"role": m.role, "content": m.content} for m in call.messages],
            context=[c.as_dict() for c in call.context],
            samples=samples,
            unsupported_claims=unsupported,
            model=model,
            timings=timings,
            labels=call.labels,
            options=_options_dict(call),
            draft=call.draft,
        )
        recorded = await self.store.record(client_id, trace, self._announce)
        yield Outcome(recorded, unsupported)

    async def _announce(self, conn: Any, trace: Trace) -> None:
        if self.events is None:
            return
        await self.events.add(
            conn,
            "reasoning.trace_recorded",
            {
                "trace_id": str(trace.id),
                "strategy": trace.strategy,
                "model": trace.model or "unknown",
                "steps": len(trace.samples),
                "tokens": trace.prompt_tokens + trace.completion_tokens,
            },
            aggregate_id=str(trace.id),
        )

    async def _generate(
        self, messages: Sequence[Message], options: GenerationOptions, out: Generated
    ) -> AsyncIterator[str]:
        start = time.perf_counter()
        parts: list[str] = []
        try:
            async with aclosing(self.backend.stream(messages, options, out.usage)) as stream:
                async for delta in stream:
                    if out.first_token_ms is None:
                        out.first_token_ms = _ms_since(start)
                    parts.append(delta)
                    yield delta
        finally:
            out.text = "".join(parts)
            out.generation_ms = _ms_since(start)

    async def _self_consistency(
        self, messages: Sequence[Message], call: ReasonCall
    ) -> list[Generated]:
        base_seed = call.options.seed if call.options.seed is not None else random.getrandbits(31)
        temperature = max(call.options.temperature, strategies.SELF_CONSISTENCY_MIN_TEMPERATURE)
        runs = []
        for i in range(call.samples):
            options = GenerationOptions(
                max_tokens=call.options.max_tokens,
                temperature=temperature,
                top_p=call.options.top_p,
                stop=call.options.stop,
                seed=(base_seed + i) % 2**32,
            )
            generated = Generated()
            async for _ in self._generate(messages, options, generated):
                pass
            runs.append(generated)
        return runs

    async def _verify(self, call: ReasonCall) -> strategies.Verification:
        claims = strategies.split_claims(call.draft)
        facts = [c.text for c in call.context]
        if not claims or not facts:
            return strategies.verify_claims(claims, facts, [[0.0] * len(facts) for _ in claims])
        vectors = await self.embedder.embed([*claims, *facts])
        claim_vectors, fact_vectors = vectors[: len(claims)], vectors[len(claims) :]
        # Vectors are L2-normalised: the dot product is the cosine similarity.
        similarities: list[list[float]] = (
            np.asarray(claim_vectors) @ np.asarray(fact_vectors).T
        ).tolist()
        return strategies.verify_claims(claims, facts, similarities)


def _sample(generated: Generated, answer: str) -> TraceSample:
    return TraceSample(
        text=generated.text,
        answer=answer,
        completion_tokens=generated.usage.completion_tokens,
        generation_ms=generated.generation_ms,
    )


def _options_dict(call: ReasonCall) -> dict[str, Any]:
    o = call.options
    options: dict[str, Any] = {
        "max_tokens": o.max_tokens,
        "temperature": o.temperature,
        "top_p": o.top_p,
        "stop": list(o.stop),
    }
    if o.seed is not None:
        options["seed"] = o.seed
    if o.json_schema is not None:
        options["json_schema"] = o.json_schema
    if call.strategy == strategies.SELF_CONSISTENCY:
        options["samples"] = call.samples
    return options

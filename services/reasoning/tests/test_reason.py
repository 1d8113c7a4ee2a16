"""Reason, Embed and GetModelInfo over real gRPC with the real models (SmolLM2-135M on llama.cpp,
all-MiniLM-L6-v2), against embedded PostgreSQL and NATS. Generations stay short (CI has 2 cores)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from edrs_core import testing
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_reasoning import strategies
from edrs_reasoning.app import definition

pytestmark = pytest.mark.integration

DATABASE = "test_reasoning_models"
TENANT_A = testing.tenant_metadata("tenant-a")
TENANT_B = testing.tenant_metadata("tenant-b")


@pytest.fixture(scope="module")
async def reasoning(
    postgres_engine, redis_engine, nats_engine
) -> AsyncIterator[testing.RunningService]:
    settings = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database=DATABASE, redis_db=4
    )
    async with testing.running_service(
        definition, start_timeout=180, max_output_tokens=256, **settings
    ) as svc:
        yield svc


@pytest.fixture
def stub(reasoning: testing.RunningService) -> reasoning_pb2_grpc.ReasoningServiceStub:
    return reasoning_pb2_grpc.ReasoningServiceStub(reasoning.channel)


def user(text: str) -> reasoning_pb2.ChatMessage:
    return reasoning_pb2.ChatMessage(role="user", content=text)


def options(max_tokens: int = 16, **kwargs) -> reasoning_pb2.GenerationOptions:
    return reasoning_pb2.GenerationOptions(max_tokens=max_tokens, **kwargs)


async def reason(
    stub, request: reasoning_pb2.ReasonRequest, metadata=TENANT_A
) -> tuple[list[str], reasoning_pb2.ReasonResult]:
    """The stream's deltas and its result; fails unless the result comes once, last."""
    deltas: list[str] = []
    results = []
    async for response in stub.Reason(request, metadata=metadata):
        assert not results, "nothing may follow the result"
        if response.HasField("result"):
            results.append(response.result)
        else:
            deltas.append(response.delta.text)
    assert len(results) == 1
    return deltas, results[0]


async def outbox_payloads(postgres_engine, event_type: str) -> list[dict]:
    conn = await asyncpg.connect(postgres_engine.url(DATABASE))
    try:
        rows = await conn.fetch(
            "SELECT body FROM edrs_outbox WHERE event_type = $1 ORDER BY position", event_type
        )
    finally:
        await conn.close()
    return [json.loads(bytes(r["body"]))["payload"] for r in rows]


def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- Embed and GetModelInfo ---------------------------------------------------------------------


async def test_embeddings_are_normalised_384_dimension_vectors_that_track_meaning(stub) -> None:
    texts = ["I prefer bullet points", "format answers as a list", "the weather is cold"]
    response = await stub.Embed(reasoning_pb2.EmbedRequest(texts=texts), metadata=TENANT_A)
    assert response.dimensions == 384
    assert "MiniLM" in response.model
    vectors = [list(e.values) for e in response.embeddings]
    assert [len(v) for v in vectors] == [384, 384, 384]
    for v in vectors:
        assert math.sqrt(sum(x * x for x in v)) == pytest.approx(1.0, abs=1e-3)
    preference, as_list, weather = vectors
    assert cosine(preference, as_list) > cosine(preference, weather)


async def test_concurrent_embed_calls_each_get_their_own_vectors_in_order(stub) -> None:
    texts = [f"note number {i} about {topic}" for i, topic in enumerate(["cats", "tax", "jazz"])]
    singles = await asyncio.gather(
        *[stub.Embed(reasoning_pb2.EmbedRequest(texts=[t]), metadata=TENANT_A) for t in texts]
    )
    together = await stub.Embed(reasoning_pb2.EmbedRequest(texts=texts), metadata=TENANT_A)
    for single, joint in zip(singles, together.embeddings, strict=True):
        assert cosine(single.embeddings[0].values, joint.values) == pytest.approx(1.0, abs=1e-3)


async def test_embed_runs_mixed_by_default_with_torchs_vectors(
    stub, reasoning: testing.RunningService, torch_encoder
) -> None:
    """A query goes to ONNX Runtime, a batch of passages to torch; the vectors are torch's."""
    embedder = reasoning.servicer("ReasoningService").embedder
    assert embedder.backend == "mixed"
    before = dict(embedder.encoder.calls)
    query = ["the cat sat on the mat"]
    passages = [f"passage {i}: " + "quarterly revenue grew in every region " * 40 for i in range(8)]
    for texts, engine in ((query, "onnx"), (passages, "torch")):
        response = await stub.Embed(reasoning_pb2.EmbedRequest(texts=texts), metadata=TENANT_A)
        reference = torch_encoder.encode(texts, 32)
        for got, want in zip(response.embeddings, reference, strict=True):
            assert cosine(got.values, want.tolist()) >= 0.9999
        assert embedder.encoder.calls[engine] == before[engine] + 1


@pytest.mark.parametrize(
    ("texts", "detail"),
    [
        ([], "texts is required"),
        (["fine", ""], "texts[1] must be 1 to 20000 characters"),
        (["x" * 20_001], "texts[0] must be 1 to 20000 characters"),
        (["x"] * 257, "texts has 257 items; the limit is 256"),
    ],
)
async def test_bad_embed_input_names_the_field(stub, texts, detail) -> None:
    await testing.expect_rpc_error(
        stub.Embed(reasoning_pb2.EmbedRequest(texts=texts), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        detail,
    )


async def test_model_info_describes_the_local_models(stub) -> None:
    info = await stub.GetModelInfo(reasoning_pb2.GetModelInfoRequest(), metadata=TENANT_A)
    assert info.backend == "local"
    assert "SmolLM2-135M-Instruct" in info.chat_model
    assert (info.context_window, info.max_output_tokens) == (2048, 256)
    assert info.embedding_dimensions == 384
    assert "MiniLM" in info.embedding_model


# --- Reason -------------------------------------------------------------------------------------


async def test_direct_answer_streams_and_leaves_a_complete_trace(stub, postgres_engine) -> None:
    request = reasoning_pb2.ReasonRequest(
        messages=[
            reasoning_pb2.ChatMessage(role="system", content="The user's manager is Priya."),
            user("Who is my manager?"),
        ],
        context=[
            reasoning_pb2.ContextItem(
                id="fact-1", source="memory.fact", text="The user's manager is Priya", score=0.9
            )
        ],
        options=options(16, temperature=0.0),
        labels={"conversation_id": "conv-direct", "persona_id": "p1"},
    )
    deltas, result = await reason(stub, request)
    assert len(deltas) > 1
    assert "".join(deltas) == result.answer
    assert result.usage.prompt_tokens > 0
    assert 0 < result.usage.completion_tokens <= 16
    assert "SmolLM2" in result.model
    assert result.timings.total_ms >= result.timings.generation_ms > 0

    trace = await stub.GetTrace(
        reasoning_pb2.GetTraceRequest(id=result.trace_id), metadata=TENANT_A
    )
    assert trace.strategy == "direct"
    assert trace.prompt == "system: The user's manager is Priya.\nuser: Who is my manager?"
    assert [(m.role, m.content) for m in trace.messages] == [
        ("system", "The user's manager is Priya."),
        ("user", "Who is my manager?"),
    ]
    assert [(c.id, c.source, c.text) for c in trace.context] == [
        ("fact-1", "memory.fact", "The user's manager is Priya")
    ]
    assert trace.context[0].score == pytest.approx(0.9)
    assert dict(trace.labels) == {"conversation_id": "conv-direct", "persona_id": "p1"}
    assert (trace.prompt_tokens, trace.completion_tokens) == (
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
    )
    assert trace.answer == result.answer
    assert trace.options.max_tokens == 16
    assert trace.options.temperature == 0.0
    assert trace.timings.total_ms == pytest.approx(result.timings.total_ms)

    events = await outbox_payloads(postgres_engine, "reasoning.trace_recorded")
    assert result.trace_id in {e["trace_id"] for e in events}


async def test_traces_list_by_label(stub) -> None:
    _, first = await reason(
        stub,
        reasoning_pb2.ReasonRequest(
            messages=[user("Say hi.")], options=options(4), labels={"conversation_id": "conv-x"}
        ),
    )
    await reason(
        stub,
        reasoning_pb2.ReasonRequest(
            messages=[user("Say bye.")], options=options(4), labels={"conversation_id": "conv-y"}
        ),
    )
    listed = await stub.ListTraces(
        reasoning_pb2.ListTracesRequest(labels={"conversation_id": "conv-x"}), metadata=TENANT_A
    )
    assert [t.id for t in listed.traces] == [first.trace_id]


async def test_another_tenant_cannot_read_a_reasoning_trace(stub) -> None:
    _, result = await reason(
        stub,
        reasoning_pb2.ReasonRequest(
            messages=[user("A secret: 1234.")], options=options(4), labels={"mine": "yes"}
        ),
    )
    await testing.expect_rpc_error(
        stub.GetTrace(reasoning_pb2.GetTraceRequest(id=result.trace_id), metadata=TENANT_B),
        grpc.StatusCode.NOT_FOUND,
    )
    listed = await stub.ListTraces(
        reasoning_pb2.ListTracesRequest(labels={"mine": "yes"}), metadata=TENANT_B
    )
    assert list(listed.traces) == []


async def test_chain_of_thought_asks_for_a_final_answer_line(stub) -> None:
    deltas, result = await reason(
        stub,
        reasoning_pb2.ReasonRequest(
            messages=[user("What is 2 + 2?")],
            strategy=reasoning_pb2.STRATEGY_CHAIN_OF_THOUGHT,
            options=options(24, temperature=0.0),
        ),
    )
    assert deltas
    trace = await stub.GetTrace(
        reasoning_pb2.GetTraceRequest(id=result.trace_id), metadata=TENANT_A
    )
    assert trace.strategy == "chain_of_thought"
    assert 'starting with "Answer:"' in trace.prompt
    assert len(trace.samples) == 1
    assert trace.samples[0].text == "".join(deltas)
    assert trace.samples[0].answer == result.answer
    assert result.answer  # the answer line, or the whole text without one


async def test_self_consistency_votes_over_its_samples(stub) -> None:
    # Five samples: with two, any answer "wins" and the vote is never tested.
    deltas, result = await reason(
        stub,
        reasoning_pb2.ReasonRequest(
            messages=[user("Is the sky blue? Answer yes or no.")],
            strategy=reasoning_pb2.STRATEGY_SELF_CONSISTENCY,
            samples=5,
            options=options(12, seed=7),
        ),
    )
    trace = await stub.GetTrace(
        reasoning_pb2.GetTraceRequest(id=result.trace_id), metadata=TENANT_A
    )
    assert trace.strategy == "self_consistency"
    assert len(trace.samples) == 5
    winners = [s for s in trace.samples if s.answer == result.answer]
    assert winners, "the answer is one of the samples' answers"
    # The answer is the most frequent normalised answer; a tie goes to the one given first.
    normalised = [strategies.normalise_answer(s.answer) for s in trace.samples]
    counts = {a: normalised.count(a) for a in normalised}
    most = max(counts.values())
    first_most = next(a for a in normalised if counts[a] == most)
    assert strategies.normalise_answer(result.answer) == first_most, normalised
    # The confidence is the winning answer's share of the samples (answers compared normalised).
    same = [
        s
        for s in trace.samples
        if strategies.normalise_answer(s.answer) == strategies.normalise_answer(result.answer)
    ]
    assert result.confidence == pytest.approx(len(same) / len(trace.samples))
    assert result.confidence == pytest.approx(most / 5)
    # The streamed text is the first sample that gave the winning answer.
    assert "".join(deltas) == trace.samples[normalised.index(first_most)].text
    assert "".join(deltas) == winners[0].text
    assert result.usage.completion_tokens == sum(s.completion_tokens for s in trace.samples)


async def test_verify_flags_the_claim_the_facts_do_not_support(stub) -> None:
    deltas, result = await reason(
        stub,
        reasoning_pb2.ReasonRequest(
            messages=[user("Who is my manager, and where do I live?")],
            strategy=reasoning_pb2.STRATEGY_VERIFY,
            draft="Your manager is Priya. You live on Mars.",
            context=[
                reasoning_pb2.ContextItem(
                    id="f1", source="memory.fact", text="My manager is Priya"
                ),
                reasoning_pb2.ContextItem(id="f2", source="memory.fact", text="I live in Lisbon"),
            ],
        ),
    )
    assert list(result.unsupported_claims) == ["You live on Mars."]
    assert result.confidence == pytest.approx(0.5)
    assert "".join(deltas) == result.answer
    assert result.answer.startswith("partly supported")
    trace = await stub.GetTrace(
        reasoning_pb2.GetTraceRequest(id=result.trace_id), metadata=TENANT_A
    )
    assert trace.draft == "Your manager is Priya. You live on Mars."
    assert list(trace.unsupported_claims) == ["You live on Mars."]


ORDER_CALL = {
    "type": "object",
    "properties": {
        "tool": {"type": "string", "enum": ["lookup_order", "none"]},
        "arguments": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "maxLength": 12}},
            "required": ["order_id"],
            "additionalProperties": False,
        },
    },
    "required": ["tool", "arguments"],
    "additionalProperties": False,
}


async def test_a_json_schema_constrains_the_local_models_answer_and_is_traced(stub) -> None:
    _, result = await reason(
        stub,
        reasoning_pb2.ReasonRequest(
            messages=[user("Which tool would you call to find order A-17?")],
            options=options(48, temperature=0.0, json_schema=json.dumps(ORDER_CALL)),
        ),
    )
    answer = json.loads(result.answer)
    assert set(answer) == {"tool", "arguments"}
    assert answer["tool"] in ("lookup_order", "none")
    assert set(answer["arguments"]) == {"order_id"}
    assert len(answer["arguments"]["order_id"]) <= 12
    trace = await stub.GetTrace(
        reasoning_pb2.GetTraceRequest(id=result.trace_id), metadata=TENANT_A
    )
    assert json.loads(trace.options.json_schema) == ORDER_CALL


@pytest.mark.parametrize(
    ("request_fields", "detail"),
    [
        ({"messages": []}, "messages is required"),
        ({"messages": [user("hi"), {"role": "assistant", "content": "hello"}]}, "messages[1].role"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role must be one of"),
        ({"messages": [user("")]}, "messages[0].content is required"),
        ({"options": options(257)}, "options.max_tokens must be between 1 and 256"),
        ({"options": options(4, temperature=2.5)}, "options.temperature"),
        ({"options": options(4, top_p=0.0)}, "options.top_p"),
        ({"options": options(4, stop=[""])}, "options.stop[0]"),
        ({"labels": {"Bad-Key": "x"}}, "labels key 'Bad-Key'"),
        ({"samples": 17}, "samples must be between 2 and 16"),
        ({"strategy": reasoning_pb2.STRATEGY_VERIFY}, "draft is required"),
        ({"strategy": 99}, "strategy must be one of"),
        ({"options": options(4, json_schema="{")}, "options.json_schema is not JSON"),
        ({"options": options(4, json_schema="[]")}, "options.json_schema must be a JSON Schema"),
        # Bounds llama.cpp would spell out into gigabytes of grammar (it once took the service down).
        (
            {"options": options(4, json_schema=json.dumps({"type": "string", "maxLength": 10**9}))},
            "bounds (minLength, maxLength, minItems, maxItems, minProperties, maxProperties, and "
            "{m,n} in patterns) add up to 1000000000; the limit is 100000",
        ),
        (
            {
                "options": options(
                    4,
                    json_schema=json.dumps(
                        {
                            "type": "object",
                            "properties": {
                                "a": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "maxItems": 70000,
                                },
                                "b": {"type": "string", "pattern": "^x{20000,40000}$"},
                            },
                        }
                    ),
                )
            },
            "add up to 130000; the limit is 100000",
        ),
        (
            {"options": options(4, json_schema='{"a":' * 5000 + "1" + "}" * 5000)},
            "nested too deeply",
        ),
        (
            {
                "options": options(4, json_schema="{}"),
                "strategy": reasoning_pb2.STRATEGY_CHAIN_OF_THOUGHT,
            },
            "options.json_schema is for STRATEGY_DIRECT",
        ),
    ],
)
async def test_bad_reason_input_names_the_field(stub, request_fields, detail) -> None:
    fields = {"messages": [user("hi")], **request_fields}
    fields["messages"] = [
        m if isinstance(m, reasoning_pb2.ChatMessage) else reasoning_pb2.ChatMessage(**m)
        for m in fields["messages"]
    ]
    await testing.expect_rpc_error(
        reason(stub, reasoning_pb2.ReasonRequest(**fields)),
        grpc.StatusCode.INVALID_ARGUMENT,
        detail,
    )


async def test_a_prompt_beyond_the_context_window_is_refused_with_both_numbers(stub) -> None:
    long = "word " * 3000
    error = await testing.expect_rpc_error(
        reason(stub, reasoning_pb2.ReasonRequest(messages=[user(long)], options=options(64))),
        grpc.StatusCode.INVALID_ARGUMENT,
        "options.max_tokens is 64",
        "context window of 2048 tokens",
    )
    assert "the prompt is" in (error.details() or "")


async def test_reason_without_tenant_is_refused(stub) -> None:
    await testing.expect_refused_without_tenant(
        reason(stub, reasoning_pb2.ReasonRequest(messages=[user("hi")]), metadata=None)
    )

"""Held tool calls once a human decided, every service real: persona, memory, reasoning (its
OpenAI-compatible backend against a scripted model on loopback, so the test chooses the model's
call), the task service's approvals on the embedded Temporal server, and integration calling a
real MCP server over stdio that writes every change to a ledger.

Approved, a call runs once (even when the decision arrives twice, or a first try already ran it)
with the arguments the approval showed, and its result is told in the conversation; rejected, it
never runs and the conversation says so; a decision nobody made, or for another tenant's approval,
runs nothing."""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from edrs_core import testing
from edrs_core.engines.ports import free_port
from edrs_events import BaseEvent
from edrs_integration.app import definition as integration_definition
from edrs_memory.app import definition as memory_definition
from edrs_persona.app import definition
from edrs_proto.integration.v1 import tools_pb2, tools_pb2_grpc
from edrs_proto.persona.v1 import persona_pb2, persona_pb2_grpc
from edrs_proto.task.v1 import workflow_pb2, workflow_pb2_grpc
from edrs_reasoning.app import definition as reasoning_definition
from edrs_task.app import definition as task_definition

# The scripted model server of test_tool_use.py (tests are not importable by name here).
_spec = importlib.util.spec_from_file_location(
    "persona_test_tool_use", Path(__file__).with_name("test_tool_use.py")
)
assert _spec is not None and _spec.loader is not None
_tool_use = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _tool_use  # its dataclasses look their module up there
_spec.loader.exec_module(_tool_use)
of_kind = _tool_use.of_kind
scripted = _tool_use.scripted  # a fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN = uuid.uuid4().hex[:6]
TENANT_ID = f"approved-{RUN}"
TENANT = testing.tenant_metadata(TENANT_ID)
ADMIN = testing.tenant_metadata(TENANT_ID, subject="user:approver", role="admin")
OTHER_TENANT_ID = f"approved-other-{RUN}"
REDIS_DB = 12
MCP_SERVER = Path(__file__).resolve().parents[2] / "integration/tests/mcp_orders_server.py"
OPTIONS = persona_pb2.ConverseOptions(max_tokens=48, temperature=0.0)


@pytest.fixture(scope="module")
def engines(postgres_engine, redis_engine, nats_engine):
    def settings(database: str) -> dict[str, str]:
        return testing.engine_settings(
            postgres_engine, redis_engine, nats_engine, database=database, redis_db=REDIS_DB
        )

    return settings


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("approved-calls") / "ledger.txt"
    path.touch()
    return path


@pytest.fixture(scope="module")
async def fleet(
    engines, scripted, openbao_engine, temporal_engine
) -> AsyncIterator[dict[str, testing.RunningService]]:
    async with (
        testing.running_service(
            reasoning_definition,
            start_timeout=300,
            backend="openai",
            openai_base_url=scripted[0],
            openai_model="scripted",
            max_output_tokens=160,
            **engines("test_approved_reasoning"),
        ) as reasoning,
        testing.running_service(
            memory_definition,
            peers={"reasoning": reasoning.grpc_address},
            rpc_timeout_seconds=60.0,
            **engines("test_approved_memory"),
        ) as memory,
        testing.running_service(
            integration_definition,
            vault_address=openbao_engine.url(),
            vault_token=openbao_engine.root_token,
            mcp_stdio_commands=(sys.executable,),
            **engines("test_approved_integration"),
        ) as integration,
    ):
        # Persona and task are each other's peers: the task service's port is chosen first.
        task_port = free_port()
        async with (
            testing.running_service(
                definition,
                peers={
                    "memory": memory.grpc_address,
                    "reasoning": reasoning.grpc_address,
                    "integration": integration.grpc_address,
                    "task": f"127.0.0.1:{task_port}",
                },
                **engines("test_approved_persona"),
            ) as persona,
            testing.running_service(
                task_definition,
                grpc_port=task_port,
                peers={"persona": persona.grpc_address},
                temporal_address=temporal_engine.url(),
                **engines("test_approved_task"),
            ) as task,
        ):
            yield {"persona": persona, "task": task, "integration": integration}


@pytest.fixture(scope="module")
async def note_tool(fleet, ledger) -> str:
    """The MCP server's add_note tool (impact write) in TENANT."""
    server = await tools_pb2_grpc.ToolServiceStub(fleet["integration"].channel).CreateMcpServer(
        tools_pb2.CreateMcpServerRequest(
            name=f"orders{RUN}",
            transport=tools_pb2.MCP_TRANSPORT_STDIO,
            command=sys.executable,
            args=[str(MCP_SERVER), "stdio", str(ledger)],
        ),
        metadata=TENANT,
    )
    return f"{server.name}__add_note"


async def hold_a_note(fleet, scripted, note_tool: str) -> tuple[persona_pb2.ToolCallEvent, Any]:
    """A turn whose model asks to add a unique note; the persona's default policy holds it.
    Returns the held call and the conversation's ConverseRequest."""
    _, model = scripted
    text = f"call back {uuid.uuid4().hex[:8]}"

    def answer(body: dict[str, Any]) -> str:
        if "response_format" not in body:
            return "I asked for approval."
        if any("did not run" in m["content"] for m in body["messages"]):
            return json.dumps({"tool": "none"})
        return json.dumps({"tool": note_tool, "arguments": {"order_id": "B-9", "note": text}})

    model.answer = answer
    personas = persona_pb2_grpc.PersonaServiceStub(fleet["persona"].channel)
    otto = await personas.CreatePersona(
        persona_pb2.CreatePersonaRequest(
            name="Otto", role="order desk assistant", tools=[note_tool]
        ),
        metadata=TENANT,
    )
    request = persona_pb2.ConverseRequest(
        persona_id=otto.id,
        conversation_id=f"c-{uuid.uuid4().hex[:8]}",
        user_id=f"sam-{uuid.uuid4().hex[:8]}",
        text="Note on B-9 that I will call back.",
        options=OPTIONS,
    )
    events = [e async for e in personas.Converse(request, metadata=TENANT)]
    [call] = of_kind(events, "tool_call")
    assert call.status == "held" and call.approval_id, call
    return call, request


async def messages(fleet, request) -> list[persona_pb2.Message]:
    listed = await persona_pb2_grpc.PersonaServiceStub(fleet["persona"].channel).ListMessages(
        persona_pb2.ListMessagesRequest(
            persona_id=request.persona_id,
            user_id=request.user_id,
            conversation_id=request.conversation_id,
        ),
        metadata=TENANT,
    )
    return list(listed.messages)


async def told(fleet, request) -> list[persona_pb2.Message]:
    """Waits for the conversation's `tool` message (the outcome), and returns all of them."""

    async def outcome() -> bool:
        return any(m.role == "tool" for m in await messages(fleet, request))

    await testing.wait_until(outcome, 60, "the held call's outcome in the conversation")
    return [m for m in await messages(fleet, request) if m.role == "tool"]


async def held_status(fleet, tenant: str, approval_id: str) -> str:
    rt = fleet["persona"].runner.runtime
    assert rt is not None
    return str(
        await rt.db.fetchval(
            "SELECT status FROM held_tool_calls WHERE client_id = $1 AND approval_id = $2",
            tenant,
            uuid.UUID(approval_id),
        )
    )


async def decide(fleet, approval_id: str, approve: bool, comment: str = "") -> None:
    await workflow_pb2_grpc.ApprovalServiceStub(fleet["task"].channel).DecideApproval(
        workflow_pb2.DecideApprovalRequest(id=approval_id, approve=approve, comment=comment),
        metadata=ADMIN,
    )


async def deliver(fleet, tenant: str, approval_id: str, status: str = "approved") -> None:
    """Publishes a `task.approval_decided` (a new event: the inbox has not seen it) and waits until
    the persona service handled it."""
    rt = fleet["persona"].runner.runtime
    assert rt is not None
    event = BaseEvent(
        event_type="task.approval_decided",
        source_container="task",
        client_id=tenant,
        payload={"approval_id": approval_id, "status": status, "decided_by": "user:someone"},
    )
    await rt.bus.publish(event)

    async def handled() -> bool:
        return bool(
            await rt.db.fetchval(
                "SELECT count(*) FROM edrs_inbox WHERE consumer = $1 AND event_id = $2",
                "persona-approval-decided",
                event.event_id,
            )
        )

    await testing.wait_until(handled, 60, "the persona service to handle the decision")


async def test_an_approved_call_runs_once_with_the_approved_arguments_and_is_told(
    fleet, scripted, note_tool, ledger
) -> None:
    call, request = await hold_a_note(fleet, scripted, note_tool)
    arguments = json.loads(call.arguments)
    line = f"add_note B-9 {arguments['note']}"
    assert line not in ledger.read_text()
    approval = await workflow_pb2_grpc.ApprovalServiceStub(fleet["task"].channel).GetApproval(
        workflow_pb2.GetApprovalRequest(id=call.approval_id), metadata=ADMIN
    )
    assert dict(approval.details["arguments"]) == arguments
    assert await held_status(fleet, TENANT_ID, call.approval_id) == "held"

    await decide(fleet, call.approval_id, approve=True, comment="fine")
    [outcome] = await told(fleet, request)
    assert ledger.read_text().count(line) == 1
    assert "was approved by user:approver and ran" in outcome.text
    assert "noted" in outcome.text and note_tool in outcome.text
    assert await held_status(fleet, TENANT_ID, call.approval_id) == "completed"

    # The decision delivered again (a new event for the same approval): nothing runs again.
    await deliver(fleet, TENANT_ID, call.approval_id)
    assert ledger.read_text().count(line) == 1
    assert len([m for m in await messages(fleet, request) if m.role == "tool"]) == 1

    # The user's next turn in the conversation tells the model, as untrusted data; once.
    _, model = scripted
    model.answer = lambda body: (
        json.dumps({"tool": "none"}) if "response_format" in body else "The note was added."
    )
    for turn in ("Did it work?", "Thanks."):
        before = len(model.requests)
        again = persona_pb2.ConverseRequest()
        again.CopyFrom(request)
        again.text = turn
        personas = persona_pb2_grpc.PersonaServiceStub(fleet["persona"].channel)
        events = [e async for e in personas.Converse(again, metadata=TENANT)]
        assert of_kind(events, "completed")
        sent = [r["messages"][-1]["content"] for r in model.requests[before:]]
        if turn == "Did it work?":
            assert sent and all("decided by a person since" in c for c in sent), sent
            assert all(f"{note_tool}" in c and "ran and returned" in c for c in sent)
            assert all('"""\nnoted\n"""' in c and "untrusted data" in c for c in sent)
        else:
            assert sent and not any("decided by a person since" in c for c in sent), sent


async def test_a_call_a_first_try_already_ran_is_not_run_again(
    fleet, scripted, note_tool, ledger
) -> None:
    """A first try that called the tool and then failed before recording it (the inbox's
    transaction rolled back): the retry's CallTool, under the same key, replays the result."""
    call, request = await hold_a_note(fleet, scripted, note_tool)
    line = f"add_note B-9 {json.loads(call.arguments)['note']}"
    first = await tools_pb2_grpc.ToolServiceStub(fleet["integration"].channel).CallTool(
        tools_pb2.CallToolRequest(
            name=call.tool, arguments=call.arguments, idempotency_key=f"approval:{call.approval_id}"
        ),
        metadata=TENANT,
    )
    assert first.content == "noted" and ledger.read_text().count(line) == 1

    await decide(fleet, call.approval_id, approve=True)
    [outcome] = await told(fleet, request)
    assert "and ran" in outcome.text and "noted" in outcome.text
    assert ledger.read_text().count(line) == 1


async def test_a_rejected_call_never_runs_and_the_conversation_says_so(
    fleet, scripted, note_tool, ledger
) -> None:
    call, request = await hold_a_note(fleet, scripted, note_tool)
    line = f"add_note B-9 {json.loads(call.arguments)['note']}"
    await decide(fleet, call.approval_id, approve=False, comment="not this customer")
    [outcome] = await told(fleet, request)
    assert "was rejected by user:approver: not this customer. It did not run." in outcome.text
    assert await held_status(fleet, TENANT_ID, call.approval_id) == "rejected"
    # Even a later "approved" event for it runs nothing: the task service says rejected.
    await deliver(fleet, TENANT_ID, call.approval_id)
    assert line not in ledger.read_text()
    assert await held_status(fleet, TENANT_ID, call.approval_id) == "rejected"


async def test_a_decision_nobody_made_or_from_another_tenant_runs_nothing(
    fleet, scripted, note_tool, ledger
) -> None:
    call, request = await hold_a_note(fleet, scripted, note_tool)
    line = f"add_note B-9 {json.loads(call.arguments)['note']}"
    # Another tenant's event naming this approval: not that tenant's call.
    await deliver(fleet, OTHER_TENANT_ID, call.approval_id)
    # This tenant's event, but the approval is still pending in the task service.
    await deliver(fleet, TENANT_ID, call.approval_id)
    assert line not in ledger.read_text()
    assert await held_status(fleet, TENANT_ID, call.approval_id) == "held"
    assert not [m for m in await messages(fleet, request) if m.role == "tool"]

    # The real decision still runs it, once.
    await decide(fleet, call.approval_id, approve=True)
    await told(fleet, request)
    assert ledger.read_text().count(line) == 1


async def test_only_the_arguments_the_approval_shows_can_run(
    fleet, scripted, note_tool, ledger
) -> None:
    """The held call's record changed after the approval was asked (as if tampered with): the
    approval shows other arguments, so nothing runs and the conversation says why."""
    call, request = await hold_a_note(fleet, scripted, note_tool)
    rt = fleet["persona"].runner.runtime
    assert rt is not None
    await rt.db.execute(
        """UPDATE held_tool_calls SET arguments = $3::jsonb
           WHERE client_id = $1 AND approval_id = $2""",
        TENANT_ID,
        uuid.UUID(call.approval_id),
        json.dumps({"order_id": "B-9", "note": "tampered"}),
    )
    await decide(fleet, call.approval_id, approve=True)
    [outcome] = await told(fleet, request)
    assert "was approved, but did not run: the approval shows other arguments" in outcome.text
    assert await held_status(fleet, TENANT_ID, call.approval_id) == "failed"
    text = ledger.read_text()
    assert "add_note B-9 tampered" not in text
    assert f"add_note B-9 {json.loads(call.arguments)['note']}" not in text

"""Unit tests of the tool policy and the choice schema (tool_use.py): pure, no I/O."""

from __future__ import annotations

import grpc
import pytest
from edrs_core import InvalidArgument
from edrs_persona.store import ToolPolicy
from edrs_persona.tool_use import (
    NONE,
    Tool,
    ToolUse,
    decision_schema,
    policy_from_proto,
    policy_to_proto,
    tool_names,
    untrusted,
    validate_arguments,
)
from edrs_proto.persona.v1 import persona_pb2
from edrs_proto.reasoning.v1 import reasoning_pb2
from jsonschema import validators

LOOKUP = Tool(
    name="orders__lookup",
    description="",
    schema={
        "type": "object",
        "properties": {"id": {"type": "string"}},
        "required": ["id"],
    },
    impact="read",
)
WIPE = Tool(name="orders__wipe", description="", schema={"type": "object"}, impact="destructive")
NOTE = Tool(name="orders__note", description="", schema={"type": "object"}, impact="write")


def use() -> ToolUse:
    return ToolUse(None, None, default_rounds=3, call_timeout=1, result_chars=100)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("tool", "policy", "tainted", "held"),
    [
        (LOOKUP, ToolPolicy(), True, False),  # reads always run
        (NOTE, ToolPolicy(), False, True),  # the default policy holds writes
        (NOTE, ToolPolicy(write="allowed"), False, False),
        (NOTE, ToolPolicy(write="allowed"), True, True),  # untrusted text in the context
        (WIPE, ToolPolicy(write="allowed"), False, True),  # destructive has its own rule
        (WIPE, ToolPolicy(destructive="allowed"), False, False),
        (WIPE, ToolPolicy(destructive="allowed"), True, True),
    ],
)
def test_which_calls_wait_for_a_human(tool, policy, tainted, held) -> None:
    assert bool(use()._needs_approval(tool, policy, tainted)) is held


def test_the_choice_schema_accepts_only_the_tools_with_valid_arguments_or_none() -> None:
    schema = decision_schema([LOOKUP, WIPE], allow_none=True)
    valid = validators.validator_for(schema)(schema)
    assert valid.is_valid({"tool": "orders__lookup", "arguments": {"id": "A-1"}})
    assert valid.is_valid({"tool": NONE})
    assert not valid.is_valid({"tool": "orders__lookup", "arguments": {"id": 1}})
    assert not valid.is_valid({"tool": "orders__delete", "arguments": {}})
    required = decision_schema([LOOKUP], allow_none=False)
    assert not validators.validator_for(required)(required).is_valid({"tool": NONE})


def test_arguments_are_checked_against_the_tools_schema() -> None:
    assert validate_arguments(LOOKUP, {"id": "A-1"}) is None
    assert "arguments['id']" in (validate_arguments(LOOKUP, {"id": 3}) or "")


def test_policy_round_trips_and_bad_values_name_their_field() -> None:
    policy = ToolPolicy(write="allowed", destructive="required", max_rounds=2, choice="required")
    assert policy_from_proto(policy_to_proto(policy)) == policy
    assert policy_from_proto(persona_pb2.ToolPolicy()) == ToolPolicy()
    with pytest.raises(InvalidArgument) as error:
        policy_from_proto(persona_pb2.ToolPolicy(max_rounds=9))
    assert error.value.field == "tool_policy.max_rounds"
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_tool_names_are_checked_and_deduplicated() -> None:
    assert tool_names(["a", "b", "a"]) == ["a", "b"]
    with pytest.raises(InvalidArgument, match=r"tools\[1\]"):
        tool_names(["a", "no spaces"])
    with pytest.raises(InvalidArgument, match="limit is 32"):
        tool_names([f"t{i}" for i in range(33)])


def test_retrieved_documents_make_the_context_untrusted() -> None:
    fact = reasoning_pb2.ContextItem(source="memory.fact", text="x")
    passage = reasoning_pb2.ContextItem(source="knowledge.chunk", text="x")
    assert not untrusted([fact])
    assert untrusted([fact, passage])


class _ApprovalStub:
    """A unit test's stand-in for the task service's ApprovalService: records what it is asked."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    async def RequestApproval(self, request):  # noqa: N802 (gRPC method name)
        from edrs_proto.task.v1 import workflow_pb2

        self.requests.append(request)
        return workflow_pb2.Approval(id="a-1", title=request.title)


class _HeldCalls:
    """A unit test's stand-in for the persona store's held calls: records what it is given."""

    def __init__(self) -> None:
        self.added: list[tuple[str, object]] = []

    async def add_held_call(self, client_id, call):
        self.added.append((client_id, call))


async def test_a_held_call_becomes_one_approval_per_call_with_what_was_asked() -> None:
    from uuid import UUID

    from edrs_core.context import request_context
    from edrs_persona.tool_use import ApprovalRequest, TaskApprovals
    from edrs_proto.task.v1 import workflow_pb2

    approval_id, message_id, persona_id = UUID(int=1), UUID(int=2), UUID(int=3)

    class _Stub(_ApprovalStub):
        async def RequestApproval(self, request):  # noqa: N802 (gRPC method name)
            self.requests.append(request)
            return workflow_pb2.Approval(id=str(approval_id), title=request.title)

    stub, held = _Stub(), _HeldCalls()
    with request_context("tenant-1", "corr-1"):
        hold = await TaskApprovals(stub, held).request(  # type: ignore[arg-type]
            ApprovalRequest(
                persona_id=str(persona_id),
                conversation_id="c",
                user_id="u",
                message_id=str(message_id),
                call_id="call-2",
                tool="orders__wipe",
                arguments={"confirm": True},
                impact="destructive",
                reason="after untrusted content",
            )
        )
    assert hold.approval_id == str(approval_id) and "did not run" in hold.note
    [sent] = stub.requests
    assert sent.idempotency_key == f"tool-call:{message_id}:call-2" and sent.role == "admin"  # type: ignore[attr-defined]
    details = dict(sent.details)  # type: ignore[attr-defined]
    assert details["tool"] == "orders__wipe" and details["impact"] == "destructive"
    assert dict(details["arguments"]) == {"confirm": True}
    # The held call is recorded in the caller's tenant, as the approval shows it.
    [(tenant, call)] = held.added
    assert tenant == "tenant-1"
    assert (call.approval_id, call.tool, call.arguments, call.status) == (  # type: ignore[attr-defined]
        approval_id,
        "orders__wipe",
        {"confirm": True},
        "held",
    )
    assert call.key == f"approval:{approval_id}"  # type: ignore[attr-defined]

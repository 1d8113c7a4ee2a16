"""Workflow definitions: validation into a DAG with reasons, and references between steps."""

from __future__ import annotations

import pytest
from edrs_core import FailedPrecondition, InvalidArgument
from edrs_task.definitions import resolve, topological_order, validate_spec


def step(sid: str, *after: str, **extra: object) -> dict:
    return {
        "id": sid,
        "type": "tool_call",
        "dependsOn": list(after),
        "with": {"tool": "t", "arguments": {}},
        **extra,
    }


def test_a_valid_dag_is_ordered_with_each_step_after_its_dependencies() -> None:
    spec = validate_spec(
        {"steps": [step("d", "b", "c"), step("b", "a"), step("c", "a"), step("a")]}
    )
    order = topological_order(spec)
    assert order.index("a") < order.index("b") < order.index("d")
    assert order.index("c") < order.index("d")


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        ([], "spec.steps: List should have at least 1 item"),
        ([step("a"), step("a")], "spec.steps[1] ('a'): the id is used by another step"),
        ([step("a", "a")], "a step cannot depend on itself"),
        ([step("a", "c"), step("b", "a"), step("c", "b")], "cycle through a, b, c"),
        ([{"id": "x", "type": "approval", "with": {"title": "ok?"}}], ".with.role: Field required"),
        (
            [
                {
                    "id": "x",
                    "type": "approval",
                    "with": {"role": "r", "title": "t", "onExpiry": "maybe"},
                }
            ],
            ".with.onExpiry",
        ),
        ([step("a", retry={"maxAttempts": 0})], "spec.steps.0.retry.maxAttempts"),
        ([step("a", timeoutSeconds=-1)], "spec.steps.0.timeoutSeconds"),
        (
            [
                {
                    "id": "w",
                    "type": "wait",
                    "with": {"seconds": 1},
                    "compensation": {"type": "tool_call"},
                }
            ],
            "only steps with a side effect",
        ),
        (
            [step("a"), step("b", with_={})],
            "spec.steps.1.with_",
        ),
        (
            [
                step("a"),
                {
                    "id": "b",
                    "type": "tool_call",
                    "with": {"tool": "t", "arguments": {"x": "${steps.a.output.y}"}},
                },
            ],
            "names 'a', which is not a step this one depends on",
        ),
        ([step(f"s{i}") for i in range(101)], "101 steps; a workflow has at most 100"),
    ],
)
def test_invalid_definitions_are_refused_with_their_reason(steps: list, reason: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_spec({"steps": steps})
    assert reason in refused.value.message


def test_tool_calls_are_refused_while_no_tool_service_can_run_them() -> None:
    with pytest.raises(FailedPrecondition, match="tool_call steps cannot run: no integration"):
        validate_spec({"steps": [step("a")]}, tool_unavailable="no integration service")
    validate_spec(
        {"steps": [{"id": "w", "type": "wait", "with": {"seconds": 5}}]},
        tool_unavailable="no integration service",
    )


def test_references_take_values_from_the_input_and_earlier_steps() -> None:
    scope = {"input": {"who": {"name": "Ada"}}, "steps": {"a": {"output": {"rows": [1, 2]}}}}
    assert resolve("${steps.a.output.rows}", scope) == [1, 2]
    assert resolve({"greeting": "Hello ${input.who.name}!"}, scope) == {"greeting": "Hello Ada!"}
    assert resolve(["${input.missing}", "n=${steps.a.output.rows}"], scope) == [None, "n=[1, 2]"]

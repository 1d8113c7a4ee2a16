"""Workflow definitions: the JSON a user writes, validated into a DAG of typed steps.

A definition is {"steps": [...]}; each step has an id, a type, `dependsOn` (the DAG), `with` (the
type's parameters, where "${input.a}" and "${steps.X.output.b}" take values from the run's input
and from earlier steps), and optionally `retry`, `timeoutSeconds` and `compensation`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from edrs_core import FailedPrecondition, InvalidArgument
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_STEPS = 100
MAX_WAIT_SECONDS = 30 * 24 * 3600
DEFAULT_APPROVAL_SECONDS = 24 * 3600
STEP_TYPES = ("model_call", "knowledge_search", "tool_call", "approval", "wait", "sub_workflow")
# Step types that run as an activity (a side effect, recorded in the effects ledger).
ACTIVITY_TYPES = ("model_call", "knowledge_search", "tool_call")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# A whole-value reference: "${input.customer.id}" or "${steps.fetch.output.rows}".
REFERENCE = re.compile(r"\$\{(input|steps)((?:\.[A-Za-z0-9_-]+)*)\}")

StepType = Literal[
    "model_call", "knowledge_search", "tool_call", "approval", "wait", "sub_workflow"
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RetrySpec(_Model):
    max_attempts: int = Field(default=3, ge=1, le=20, alias="maxAttempts")
    initial_interval_seconds: float = Field(
        default=1.0, gt=0, le=3600, alias="initialIntervalSeconds"
    )
    backoff_coefficient: float = Field(default=2.0, ge=1.0, le=10.0, alias="backoffCoefficient")
    max_interval_seconds: float = Field(default=60.0, gt=0, le=86400, alias="maxIntervalSeconds")


class CompensationSpec(_Model):
    type: Literal["model_call", "knowledge_search", "tool_call"]
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout_seconds: float = Field(default=300.0, gt=0, le=86400, alias="timeoutSeconds")


class StepSpec(_Model):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    type: StepType
    depends_on: list[str] = Field(default_factory=list, alias="dependsOn", max_length=MAX_STEPS)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout_seconds: float = Field(default=300.0, gt=0, le=86400, alias="timeoutSeconds")
    compensation: CompensationSpec | None = None


class WorkflowSpec(_Model):
    steps: list[StepSpec] = Field(min_length=1)


class _ModelCall(_Model):
    prompt: str = Field(min_length=1)
    system: str = ""
    max_tokens: int = Field(default=256, ge=1, le=8192, alias="maxTokens")


class _KnowledgeSearch(_Model):
    query: str = Field(min_length=1)
    limit: int = Field(default=5, ge=1, le=100)


class _ToolCall(_Model):
    tool: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class _Approval(_Model):
    role: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=500)
    details: dict[str, Any] = Field(default_factory=dict)
    expires_in_seconds: int = Field(
        default=DEFAULT_APPROVAL_SECONDS, ge=1, le=MAX_WAIT_SECONDS, alias="expiresInSeconds"
    )
    on_expiry: Literal["fail", "approve", "reject"] = Field(default="fail", alias="onExpiry")


class _Wait(_Model):
    seconds: float = Field(gt=0, le=MAX_WAIT_SECONDS)


class _SubWorkflow(_Model):
    workflow: str = Field(pattern=NAME.pattern)
    version: int = Field(default=0, ge=0)
    input: dict[str, Any] = Field(default_factory=dict)


PARAMETERS: dict[str, type[_Model]] = {
    "model_call": _ModelCall,
    "knowledge_search": _KnowledgeSearch,
    "tool_call": _ToolCall,
    "approval": _Approval,
    "wait": _Wait,
    "sub_workflow": _SubWorkflow,
}


def _first_error(exc: ValidationError, where: str) -> InvalidArgument:
    error = exc.errors()[0]
    path = ".".join(str(p) for p in error["loc"])
    return InvalidArgument(f"{where}{'.' + path if path else ''}: {error['msg']}", field="spec")


def _references(value: Any) -> list[tuple[str, str]]:
    """Every "${...}" reference in a `with` value, as (root, dotted path)."""
    if isinstance(value, str):
        return [(m.group(1), m.group(2).lstrip(".")) for m in REFERENCE.finditer(value)]
    if isinstance(value, dict):
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def validate_spec(raw: dict[str, Any], *, tool_unavailable: str | None = None) -> WorkflowSpec:
    """The definition as a WorkflowSpec, or InvalidArgument naming the step and the reason
    (FailedPrecondition for a tool_call step while `tool_unavailable` says why none can run)."""
    if len(raw.get("steps") or []) > MAX_STEPS:
        raise InvalidArgument(
            f"spec.steps: {len(raw['steps'])} steps; a workflow has at most {MAX_STEPS}",
            field="spec",
        )
    try:
        spec = WorkflowSpec.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(exc, "spec") from None
    ids = [s.id for s in spec.steps]
    seen: set[str] = set()
    for index, step in enumerate(spec.steps):
        where = f"spec.steps[{index}] ({step.id!r})"
        if step.id in seen:
            raise InvalidArgument(f"{where}: the id is used by another step", field="spec")
        seen.add(step.id)
        for dep in step.depends_on:
            if dep not in ids:
                raise InvalidArgument(f"{where}: dependsOn names no step: {dep!r}", field="spec")
            if dep == step.id:
                raise InvalidArgument(f"{where}: a step cannot depend on itself", field="spec")
        try:
            PARAMETERS[step.type].model_validate(step.with_)
        except ValidationError as exc:
            raise _first_error(exc, f"{where}.with") from None
        if step.compensation is not None:
            if step.type not in ACTIVITY_TYPES:
                raise InvalidArgument(
                    f"{where}: only steps with a side effect ({', '.join(ACTIVITY_TYPES)}) have "
                    "a compensation",
                    field="spec",
                )
            try:
                PARAMETERS[step.compensation.type].model_validate(step.compensation.with_)
            except ValidationError as exc:
                raise _first_error(exc, f"{where}.compensation.with") from None
    ancestors = _ancestors(spec)  # raises on a cycle
    for index, step in enumerate(spec.steps):
        where = f"spec.steps[{index}] ({step.id!r})"
        for root, path in _references(step.with_):
            if root == "steps":
                target = path.split(".", 1)[0]
                if target not in ancestors[step.id]:
                    raise InvalidArgument(
                        f"{where}.with: ${{steps.{path}}} names {target!r}, which is not a step "
                        "this one depends on",
                        field="spec",
                    )
    uses_tools = any(
        s.type == "tool_call" or (s.compensation and s.compensation.type == "tool_call")
        for s in spec.steps
    )
    if uses_tools and tool_unavailable:
        raise FailedPrecondition(f"tool_call steps cannot run: {tool_unavailable}", field="spec")
    return spec


def topological_order(spec: WorkflowSpec) -> list[str]:
    """Step ids with every step after those it depends on (ties in definition order); a cycle is
    InvalidArgument naming the steps on it."""
    remaining = {s.id: set(s.depends_on) for s in spec.steps}
    order: list[str] = []
    while remaining:
        ready = [sid for sid, deps in remaining.items() if not deps]
        if not ready:
            raise InvalidArgument(
                f"spec: dependsOn forms a cycle through {', '.join(sorted(remaining))}",
                field="spec",
            )
        for sid in ready:
            order.append(sid)
            del remaining[sid]
        for deps in remaining.values():
            deps.difference_update(ready)
    return order


def _ancestors(spec: WorkflowSpec) -> dict[str, set[str]]:
    deps = {s.id: set(s.depends_on) for s in spec.steps}
    result: dict[str, set[str]] = {}
    for sid in topological_order(spec):
        result[sid] = set(deps[sid]).union(*(result[d] for d in deps[sid]))
    return result


def resolve(value: Any, scope: dict[str, Any]) -> Any:
    """`value` with its "${...}" references replaced from `scope` ({"input": ..., "steps":
    {id: {"output": ...}}}): a string that is one reference becomes the value itself, a
    reference inside text becomes its text. A missing path resolves to None (or "")."""
    if isinstance(value, str):
        whole = REFERENCE.fullmatch(value)
        if whole:
            return _lookup(scope, whole.group(1), whole.group(2))
        return REFERENCE.sub(lambda m: _text(_lookup(scope, m.group(1), m.group(2))), value)
    if isinstance(value, dict):
        return {k: resolve(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, scope) for v in value]
    return value


def _lookup(scope: dict[str, Any], root: str, path: str) -> Any:
    current: Any = scope.get(root)
    for part in path.lstrip(".").split(".") if path else []:
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)

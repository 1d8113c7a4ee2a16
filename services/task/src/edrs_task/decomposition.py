"""Decomposition: the model proposes a goal's subtasks as a DAG in JSON; the proposal is validated
(JSON Schema, then no unknown or cyclic dependencies), repaired once if invalid, and each subtask is
assigned to the persona whose skills fit it best, open workload breaking ties."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from edrs_core import FailedPrecondition
from jsonschema import Draft202012Validator, ValidationError

from edrs_task.store import NewTask, Task

# The step types a workflow can run (docs/tasks.md); a subtask of another type cannot be executed.
STEP_TYPES = ("model_call", "knowledge_search", "tool_call", "human_approval", "wait")
TITLE_MAX, DESCRIPTION_MAX, SKILLS_MAX, SKILL_MAX = 200, 2_000, 10, 100
# A proposal's text is refused before parsing beyond this: the model is not to send a novel.
PROPOSAL_MAX_CHARS = 50_000


def proposal_schema(max_subtasks: int) -> dict[str, Any]:
    """The JSON Schema of a proposal of at most `max_subtasks` subtasks."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["subtasks"],
        "properties": {
            "subtasks": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_subtasks,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["id", "title", "step_type"],
                    "properties": {
                        "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
                        "title": {"type": "string", "minLength": 1, "maxLength": TITLE_MAX},
                        "description": {"type": "string", "maxLength": DESCRIPTION_MAX},
                        "step_type": {"enum": list(STEP_TYPES)},
                        "skills": {
                            "type": "array",
                            "maxItems": SKILLS_MAX,
                            "items": {"type": "string", "minLength": 1, "maxLength": SKILL_MAX},
                        },
                        "depends_on": {
                            "type": "array",
                            "items": {"type": "string"},
                            "uniqueItems": True,
                        },
                    },
                },
            }
        },
    }


@dataclass(frozen=True)
class ProposedStep:
    id: str
    title: str
    description: str
    step_type: str
    skills: tuple[str, ...]
    depends_on: tuple[str, ...]


class ProposalRefused(FailedPrecondition):
    """The proposal (and its repair) was invalid; `reasons` says why, one line each."""

    def __init__(self, reasons: Sequence[str]) -> None:
        super().__init__(
            "the model's decomposition was refused: " + "; ".join(reasons), field="proposal"
        )
        self.reasons = list(reasons)


def _json_object(text: str) -> Any:
    """The JSON object in `text`: the whole text, or the outermost {...} in it (small models wrap
    their JSON in prose or a ``` fence)."""
    try:
        return json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        if start == -1 or end <= start:
            raise
        return json.loads(text[start : end + 1])


def parse_proposal(text: str, max_subtasks: int) -> tuple[list[ProposedStep], list[str]]:
    """The proposal's steps, or the reasons it is invalid (then no steps)."""
    if len(text) > PROPOSAL_MAX_CHARS:
        return [], [f"the proposal is {len(text)} characters; the limit is {PROPOSAL_MAX_CHARS}"]
    try:
        data = _json_object(text)
    except ValueError as exc:
        return [], [f"the proposal is not JSON ({exc})"]
    validator = Draft202012Validator(proposal_schema(max_subtasks))
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        return [], [_schema_reason(e) for e in errors[:10]]
    steps = [
        ProposedStep(
            id=s["id"],
            title=s["title"].strip(),
            description=s.get("description", "").strip(),
            step_type=s["step_type"],
            skills=tuple(k.strip() for k in s.get("skills", [])),
            depends_on=tuple(s.get("depends_on", [])),
        )
        for s in data["subtasks"]
    ]
    reasons = dag_problems(steps)
    return ([], reasons) if reasons else (steps, [])


def _schema_reason(error: ValidationError) -> str:
    where = "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
    ).lstrip(".")
    value: Any = error.instance
    bound = error.validator_value
    if error.validator == "maxItems":
        message = f"{len(value)} items; at most {bound} allowed"
    elif error.validator == "minItems":
        message = f"{len(value)} items; at least {bound} needed"
    elif error.validator == "maxLength":
        message = f"{len(value)} characters; the limit is {bound}"
    else:
        # jsonschema quotes the whole offending value: bounded, so a reason stays readable.
        message = error.message if len(error.message) <= 200 else error.message[:200] + "…"
    return f"{where or 'proposal'}: {message}"


def dag_problems(steps: Sequence[ProposedStep]) -> list[str]:
    """Duplicate ids, dependencies on unknown steps, and cycles (each named by its path)."""
    reasons: list[str] = []
    ids = [s.id for s in steps]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        reasons.append(f"duplicate subtask ids: {', '.join(duplicates)}")
    known = set(ids)
    for s in steps:
        for d in s.depends_on:
            if d not in known:
                reasons.append(f"subtask {s.id} depends on unknown subtask {d}")
            elif d == s.id:
                reasons.append(f"subtask {s.id} depends on itself")
    if reasons:
        return reasons
    cycle = find_cycle({s.id: s.depends_on for s in steps})
    if cycle:
        reasons.append("the dependencies form a cycle: " + " → ".join(cycle))
    return reasons


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One cycle of `graph` (node → the nodes it depends on) as a path that returns to its start,
    or None for a DAG. Iterative depth-first search: a proposal's depth is not Python's stack's."""
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for root in graph:
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            node, i = stack[-1]
            deps = graph[node]
            if i == len(deps):
                stack.pop()
                path.pop()
                colour[node] = black
                continue
            stack[-1] = (node, i + 1)
            nxt = deps[i]
            if colour.get(nxt, black) == grey:
                return [*path[path.index(nxt) :], nxt]
            if colour.get(nxt) == white:
                colour[nxt] = grey
                stack.append((nxt, 0))
                path.append(nxt)
    return None


@dataclass(frozen=True)
class Candidate:
    """A persona that may take subtasks: its id, name and skills."""

    id: UUID
    name: str
    skills: tuple[str, ...]


def _norm(skill: str) -> str:
    return re.sub(r"\s+", " ", skill.strip().lower())


def assign(
    steps: Sequence[ProposedStep], candidates: Sequence[Candidate], workload: Mapping[UUID, int]
) -> list[tuple[UUID | None, str]]:
    """For each step, the persona whose skills cover most of the step's skills, and why. A tie goes
    to the persona with less open work (counting what this plan assigned before it), then to the
    name. A step no persona has a skill for stays unassigned, saying so."""
    load = {c.id: workload.get(c.id, 0) for c in candidates}
    chosen: list[tuple[UUID | None, str]] = []
    for step in steps:
        wanted = {_norm(s) for s in step.skills}
        if not wanted:
            chosen.append((None, "the subtask names no skills: left for a person to assign"))
            continue
        scored = [(len(wanted & {_norm(k) for k in c.skills}), c) for c in candidates]
        best = max((score for score, _ in scored), default=0)
        if best == 0:
            chosen.append((None, f"no persona has any of the skills {', '.join(sorted(wanted))}"))
            continue
        tied = sorted(
            (c for score, c in scored if score == best), key=lambda c: (load[c.id], c.name, c.id)
        )
        winner = tied[0]
        matched = sorted(wanted & {_norm(k) for k in winner.skills})
        reason = (
            f"{winner.name} has {best} of the {len(wanted)} skills asked for ({', '.join(matched)})"
        )
        if len(tied) > 1:
            others = ", ".join(f"{c.name} {load[c.id]}" for c in tied[1:])
            reason += (
                f"; tied with {', '.join(c.name for c in tied[1:])}, it has the least open work "
                f"({winner.name} {load[winner.id]}, {others})"
            )
        load[winner.id] += 1
        chosen.append((winner.id, reason))
    return chosen


class ProposalSource(Protocol):
    """Where proposals come from: the model, in the service; a fixed text in unit tests."""

    async def propose(
        self, goal: str, max_subtasks: int, previous: str = "", problems: Sequence[str] = ()
    ) -> str:
        """A proposal for `goal`; with `previous` and `problems`, a repair of that proposal."""
        ...


class CandidateSource(Protocol):
    async def candidates(self) -> list[Candidate]: ...


class Workload(Protocol):
    async def open_workload(
        self, client_id: str, persona_ids: Sequence[UUID]
    ) -> dict[UUID, int]: ...


@dataclass
class Plan:
    subtasks: list[NewTask] = field(default_factory=list)
    repaired: bool = False


class Decomposer:
    def __init__(
        self, source: ProposalSource, candidates: CandidateSource, workload: Workload
    ) -> None:
        self.source = source
        self.candidates = candidates
        self.workload = workload

    async def plan(self, client_id: str, parent: Task, max_subtasks: int) -> Plan:
        """Subtasks of `parent` (their `depends_on` are indexes into the plan, as UUID(int=i)),
        assigned; ProposalRefused with the reasons when the proposal and its repair are invalid."""
        goal = parent.title if not parent.description else f"{parent.title}\n\n{parent.description}"
        text = await self.source.propose(goal, max_subtasks)
        steps, problems = parse_proposal(text, max_subtasks)
        repaired = False
        if problems:
            text = await self.source.propose(goal, max_subtasks, text, problems)
            steps, second = parse_proposal(text, max_subtasks)
            if second:
                raise ProposalRefused(
                    [f"first proposal: {p}" for p in problems]
                    + [f"repaired proposal: {p}" for p in second]
                )
            repaired = True
        candidates = await self.candidates.candidates()
        workload = await self.workload.open_workload(client_id, [c.id for c in candidates])
        index = {s.id: i for i, s in enumerate(steps)}
        subtasks = [
            NewTask(
                title=step.title,
                description=step.description,
                assignee_persona_id=persona_id,
                priority=parent.priority,
                due_at=parent.due_at,
                assignment_reason=reason,
                step_type=step.step_type,
                depends_on=tuple(UUID(int=index[d]) for d in step.depends_on),
                created_by=parent.created_by,
            )
            for step, (persona_id, reason) in zip(
                steps, assign(steps, candidates, workload), strict=True
            )
        ]
        return Plan(subtasks, repaired)

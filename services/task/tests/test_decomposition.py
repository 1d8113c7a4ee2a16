"""Decomposition as pure logic: proposals forced through an injected source (the small model would
not write a cyclic or oversized plan on request), validation reasons, repair, and assignment by
skill with open workload breaking ties."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

import pytest
from edrs_task.decomposition import (
    Candidate,
    Decomposer,
    ProposalRefused,
    assign,
    find_cycle,
    parse_proposal,
)
from edrs_task.store import Task

ADA = Candidate(UUID(int=1), "Ada", ("Research", "SQL"))
BOB = Candidate(UUID(int=2), "Bob", ("research", "writing"))
CAL = Candidate(UUID(int=3), "Cal", ("writing",))


def step(id_: str, *, deps: Sequence[str] = (), skills: Sequence[str] = (), kind="model_call"):
    return {"id": id_, "title": f"do {id_}", "step_type": kind, "skills": list(skills),
            "depends_on": list(deps)}  # fmt: skip


def proposal(*steps: dict) -> str:
    return json.dumps({"subtasks": list(steps)})


class Scripted:
    """A proposal source that answers from a script and records what it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, Sequence[str]]] = []

    async def propose(self, goal, max_subtasks, previous="", problems=()) -> str:
        self.asked.append((previous, list(problems)))
        return self.answers.pop(0)


class People:
    def __init__(self, *candidates: Candidate) -> None:
        self.list = list(candidates)

    async def candidates(self) -> list[Candidate]:
        return self.list


class Load:
    def __init__(self, open_work: dict[UUID, int]) -> None:
        self.open_work = open_work

    async def open_workload(self, client_id, persona_ids):
        return {p: self.open_work.get(p, 0) for p in persona_ids}


NOW = datetime(2026, 1, 1, tzinfo=UTC)
PARENT = Task(
    id=UUID(int=99),
    title="Quarterly report",
    description="for the board",
    status="queued",
    workflow_run_id="",
    outcome="",
    created_at=NOW,
    updated_at=NOW,
    priority=2,
    created_by="u1",
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("the plan: first research, then write", "the proposal is not JSON"),
        (json.dumps({"steps": []}), "'subtasks' is a required property"),
        (proposal(step("a", kind="teleport")), "subtasks[0].step_type: 'teleport' is not one of"),
        (proposal(*(step(f"s{i}") for i in range(9))), "subtasks: 9 items; at most 8 allowed"),
        (json.dumps({"subtasks": []}), "subtasks: 0 items; at least 1 needed"),
        (proposal(step("a", deps=["b"]), step("b", deps=["a"])), "cycle: a → b → a"),
        (proposal(step("a", deps=["a"])), "subtask a depends on itself"),
        (proposal(step("a", deps=["zz"])), "subtask a depends on unknown subtask zz"),
        (proposal(step("a"), step("a")), "duplicate subtask ids: a"),
        ("{" + " " * 60_000 + "}", "the proposal is 60002 characters"),
    ],
)
def test_an_invalid_proposal_is_refused_with_its_reason(text, reason) -> None:
    steps, reasons = parse_proposal(text, max_subtasks=8)
    assert steps == []
    assert any(reason in r for r in reasons), reasons


def test_json_wrapped_in_prose_or_a_fence_is_read() -> None:
    text = "Here is the plan:\n```json\n" + proposal(step("a"), step("b", deps=["a"])) + "\n```"
    steps, reasons = parse_proposal(text, max_subtasks=8)
    assert reasons == []
    assert [(s.id, s.depends_on) for s in steps] == [("a", ()), ("b", ("a",))]


def test_find_cycle_finds_a_long_cycle_and_none_in_a_dag() -> None:
    chain = {f"n{i}": [f"n{i + 1}"] for i in range(2_000)}
    chain["n2000"] = []
    assert find_cycle(chain) is None  # deeper than Python's recursion limit
    chain["n2000"] = ["n1500"]
    cycle = find_cycle(chain)
    assert cycle is not None and cycle[0] == cycle[-1] == "n1500" and len(cycle) == 502
    diamond = {"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}
    assert find_cycle(diamond) is None


def test_each_step_goes_to_the_persona_whose_skills_fit_best() -> None:
    steps, _ = parse_proposal(
        proposal(
            step("q", skills=["research", "sql"]),
            step("w", skills=["writing"], deps=["q"]),
            step("x", skills=["juggling"]),
            step("y"),
        ),
        max_subtasks=8,
    )
    chosen = assign(steps, [ADA, BOB, CAL], {})
    assert chosen[0] == (ADA.id, "Ada has 2 of the 2 skills asked for (research, sql)")
    assert chosen[1][0] in {BOB.id, CAL.id}
    assert chosen[2] == (None, "no persona has any of the skills juggling")
    assert chosen[3] == (None, "the subtask names no skills: left for a person to assign")


def test_a_busier_persona_loses_a_tie() -> None:
    steps, _ = parse_proposal(proposal(step("w", skills=["writing"])), max_subtasks=8)
    [(winner, reason)] = assign(steps, [BOB, CAL], {BOB.id: 3, CAL.id: 1})
    assert winner == CAL.id
    assert reason == (
        "Cal has 1 of the 1 skills asked for (writing); tied with Bob, it has the least open "
        "work (Cal 1, Bob 3)"
    )
    # Reversed load, reversed winner.
    [(winner, _)] = assign(steps, [BOB, CAL], {BOB.id: 0, CAL.id: 1})
    assert winner == BOB.id


def test_work_assigned_by_the_plan_counts_towards_the_next_tie() -> None:
    steps, _ = parse_proposal(
        proposal(*(step(f"w{i}", skills=["writing"]) for i in range(4))), max_subtasks=8
    )
    winners = [w for w, _ in assign(steps, [BOB, CAL], {})]
    assert winners == [BOB.id, CAL.id, BOB.id, CAL.id]


async def test_a_valid_proposal_becomes_assigned_subtasks_with_their_dag() -> None:
    source = Scripted(
        proposal(step("q", skills=["sql"]), step("w", skills=["writing"], deps=["q"]))
    )
    plan = await Decomposer(source, People(ADA, BOB, CAL), Load({BOB.id: 5})).plan("t", PARENT, 8)
    assert not plan.repaired
    assert [(s.title, s.assignee_persona_id, s.depends_on) for s in plan.subtasks] == [
        ("do q", ADA.id, ()),
        ("do w", CAL.id, (UUID(int=0),)),
    ]
    assert all((s.priority, s.created_by) == (2, "u1") for s in plan.subtasks)
    assert "least open work (Cal 0, Bob 5)" in plan.subtasks[1].assignment_reason


async def test_an_invalid_proposal_gets_one_repair_with_its_reasons() -> None:
    cyclic = proposal(step("a", deps=["b"]), step("b", deps=["a"]))
    source = Scripted(cyclic, proposal(step("a"), step("b", deps=["a"])))
    plan = await Decomposer(source, People(ADA), Load({})).plan("t", PARENT, 8)
    assert plan.repaired and len(plan.subtasks) == 2
    assert source.asked[1] == (cyclic, ["the dependencies form a cycle: a → b → a"])


async def test_a_proposal_still_invalid_after_repair_is_refused_with_both_reasons() -> None:
    source = Scripted("not json", proposal(step("a", kind="teleport")))
    with pytest.raises(ProposalRefused) as refused:
        await Decomposer(source, People(ADA), Load({})).plan("t", PARENT, 8)
    assert refused.value.reasons[0].startswith("first proposal: the proposal is not JSON")
    assert refused.value.reasons[1].startswith("repaired proposal: subtasks[0].step_type")
    assert "the model's decomposition was refused" in refused.value.message


def test_the_generation_schema_admits_only_dags_of_the_bounded_size() -> None:
    from edrs_task.proposals import generation_schema
    from jsonschema import Draft202012Validator

    schema = Draft202012Validator(generation_schema(3))
    assert schema.is_valid(json.loads(proposal(step("s1"), step("s2", deps=["s1"]))))
    for invalid in (
        proposal(step("s1", deps=["s1"])),  # itself: what the small model writes unconstrained
        proposal(step("s1"), step("s2", deps=["s3"])),  # a later one: a cycle could follow
        proposal(step("s2")),  # ids are s1, s2, ... in order
        proposal(*(step(f"s{i}") for i in range(1, 5))),  # over the bound
    ):
        assert not schema.is_valid(json.loads(invalid)), invalid
    # What it admits, the validator accepts.
    steps, reasons = parse_proposal(proposal(step("s1"), step("s2", deps=["s1"])), 3)
    assert reasons == [] and len(steps) == 2

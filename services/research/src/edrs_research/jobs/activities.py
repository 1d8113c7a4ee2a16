"""The activities of the ResearchJob workflow: everything that touches the world.

Each records what it did in the job's step records (`research_job_steps`, keyed by what the step
was: "plan", "knowledge:<query>", "verify:<claim hash>") before it returns; a retried or resumed
activity reads the record back instead of asking again, so a restart of the worker never runs a
search twice (the record counts real runs: docs/research.md, "Durability")."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID

from edrs_core import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
)
from edrs_core.context import request_context
from edrs_core.model_info import ModelInfoCache
from edrs_core.protobuf import timestamp
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc
from edrs_proto.research.v1 import research_pb2
from edrs_proto.task.v1 import task_pb2, task_pb2_grpc
from temporalio import activity
from temporalio.exceptions import ApplicationError

from edrs_research.config import ResearchSettings
from edrs_research.jobs import planning, synthesis
from edrs_research.jobs import store as states
from edrs_research.jobs.messages import JobEnd, JobRef
from edrs_research.jobs.store import JobRow, JobStore
from edrs_research.jobs.synthesis import Passage
from edrs_research.jobs.web import WebResearch
from edrs_research.sources import Sources

log = logging.getLogger("edrs.research.jobs")

# The tenant's own knowledge collections: trusted, but below a pinned source.
KNOWLEDGE_CREDIBILITY = 0.9
CHARS_PER_TOKEN = 3
# Peer errors about the request: a retry cannot fix them, the job fails at once.
PERMANENT = (NotFound, InvalidArgument, PermissionDenied, FailedPrecondition)
DEFAULT_MAX_TOKENS = 4000
TASK_STATUS = {
    states.COMPLETED: task_pb2.TASK_STATUS_SUCCEEDED,
    states.FAILED: task_pb2.TASK_STATUS_FAILED,
    states.CANCELLED: task_pb2.TASK_STATUS_CANCELLED,
}


@contextlib.asynccontextmanager
async def heartbeating() -> AsyncIterator[None]:
    """Heartbeat in the background while an activity works (a model call may take longer than
    the heartbeat timeout): a live worker's step is never retried beside it, a dead one's is."""
    timeout = activity.info().heartbeat_timeout
    interval = timeout.total_seconds() / 3 if timeout else 10.0

    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def claim_key(text: str, passage: str) -> str:
    return hashlib.sha256(f"{passage}\n{text}".encode()).hexdigest()[:32]


class JobActivities:
    def __init__(
        self,
        store: JobStore,
        settings: ResearchSettings,
        knowledge: knowledge_pb2_grpc.KnowledgeServiceAsyncStub,
        reasoning: reasoning_pb2_grpc.ReasoningServiceAsyncStub,
        budgets: task_pb2_grpc.BudgetServiceAsyncStub | None,
        tasks: task_pb2_grpc.TaskServiceAsyncStub | None,
        sources: Sources | None = None,
        web: WebResearch | None = None,
    ) -> None:
        self.sources = sources
        self.web = web
        self.store = store
        self.settings = settings
        self.knowledge = knowledge
        self.reasoning = reasoning
        self.budgets = budgets
        self.tasks = tasks
        self.model_info = ModelInfoCache(reasoning, 60.0)

    def all(self) -> list[Any]:
        return [self.plan, self.search, self.fetch, self.draft, self.end]

    async def _job(self, ref: JobRef) -> JobRow:
        job = await self.store.get(ref.client_id, UUID(ref.job_id))
        if job is None:
            raise ApplicationError(f"job {ref.job_id} does not exist", non_retryable=True)
        return job

    # -- plan -------------------------------------------------------------------------------

    @activity.defn(name="research.plan")
    async def plan(self, ref: JobRef) -> None:
        async with heartbeating():
            await self._plan(ref)

    async def _plan(self, ref: JobRef) -> None:
        job = await self._job(ref)
        if job.ended or await self.store.step(job.id, "plan") is not None:
            return
        with request_context(ref.client_id, None):
            await self._task_status(job, task_pb2.TASK_STATUS_RUNNING, "research started")
            await self.store.update(ref.client_id, job.id, "state", "planning", state="planning")
            depth = int(job.scope.get("depth") or 1)
            steps, planner, note, tokens = await self._make_plan(job, depth)
        plan = [s.as_dict() for s in steps]
        record = await self.store.record_step(job.id, "plan", {"plan": plan, "planner": planner})
        if record.runs > 1:
            return  # another attempt planned first: its plan stands
        detail = f"{planner} plan: {len(plan)} sub-questions, "
        detail += f"{len(planning.all_queries(plan))} queries" + (f" ({note})" if note else "")
        await self.store.update(
            ref.client_id,
            job.id,
            "plan",
            detail,
            plan=plan,
            planner=planner,
            progress={
                "sub_questions": len(plan),
                "queries": 0,
                "tokens_used": tokens,
            },
        )

    async def _make_plan(
        self, job: JobRow, depth: int
    ) -> tuple[list[planning.Step], str, str, int]:
        """(steps, planner, why the model's plan was not used, tokens spent)."""
        fallback = planning.fallback_plan(job.question, depth)
        if self.settings.planner != "model":
            return fallback, "fallback", "", 0
        max_tokens = int(job.scope.get("maxTokens") or DEFAULT_MAX_TOKENS)
        prompt = planning.PLAN_PROMPT.format(n=planning.max_steps(depth), question=job.question)
        completion = min(self.settings.plan_max_tokens, max_tokens)
        estimate = math.ceil(len(prompt) / CHARS_PER_TOKEN) + 16 + completion
        if estimate > max_tokens:
            return fallback, "fallback", "the job's token budget is too small for the model", 0
        key = f"research-job:{job.id}:plan"
        try:
            model = (await self.model_info.get()).chat_model
            await self._reserve(job, key, model, estimate)
        except ServiceError as exc:
            return fallback, "fallback", f"the model was not asked: {exc.details}", 0
        result: reasoning_pb2.ReasonResult | None = None
        try:
            result = await self._reason(
                reasoning_pb2.ReasonRequest(
                    messages=[reasoning_pb2.ChatMessage(role="user", content=prompt)],
                    strategy=reasoning_pb2.STRATEGY_DIRECT,
                    options=reasoning_pb2.GenerationOptions(
                        max_tokens=completion,
                        temperature=0.0,
                        json_schema=_schema_text(),
                    ),
                    labels={"research_job": str(job.id)},
                )
            )
        except ServiceError as exc:
            return fallback, "fallback", f"the model failed: {exc.details}", 0
        finally:
            await self._settle(job, key, result)
        used = result.usage.prompt_tokens + result.usage.completion_tokens
        try:
            steps = planning.validate_plan(result.answer, job.question, depth)
        except planning.PlanRejected as exc:
            return fallback, "fallback", f"the model's plan was rejected: {exc}", used
        return steps, "model", "", used

    async def _reason(self, request: reasoning_pb2.ReasonRequest) -> reasoning_pb2.ReasonResult:
        call = self.reasoning.Reason(request, timeout=self.settings.model_timeout_seconds)
        async for message in call:
            if message.HasField("result"):
                return message.result
        raise ApplicationError("the reasoning service ended without a result")

    async def _reserve(self, job: JobRow, key: str, model: str, tokens: int) -> None:
        if self.budgets is None:
            return
        held = await self.budgets.Reserve(
            task_pb2.ReserveRequest(key=key, persona_id=job.persona_id, model=model, tokens=tokens)
        )
        if held.status == task_pb2.RESERVATION_STATUS_NEEDS_APPROVAL:
            raise ResourceExhausted(
                f"the plan is over budget {held.budget_id} and waits for approval "
                f"{held.approval_id}: {held.reason}",
                peer="task",
            )

    async def _settle(
        self, job: JobRow, key: str, result: reasoning_pb2.ReasonResult | None
    ) -> None:
        if self.budgets is None:
            return
        usage = result.usage if result is not None else reasoning_pb2.Usage()
        try:
            await self.budgets.Settle(
                task_pb2.SettleRequest(
                    key=key,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    model=result.model if result is not None else "",
                )
            )
        except ServiceError as exc:
            log.warning("could not settle budget reservation %s: %s", key, exc.details)

    # -- search -----------------------------------------------------------------------------

    @activity.defn(name="research.search")
    async def search(self, ref: JobRef) -> None:
        async with heartbeating():
            await self._search(ref)

    async def _search(self, ref: JobRef) -> None:
        job = await self._job(ref)
        if job.ended:
            return
        await self.store.update(ref.client_id, job.id, "state", "searching", state="searching")
        collections = list(job.scope.get("collections", []))
        queries = planning.all_queries(job.plan)
        done = await self.store.steps(job.id, "knowledge:")
        found: set[str] = {p["key"] for r in done.values() for p in r.result}
        for i, query in enumerate(queries):
            key = f"knowledge:{query}"
            if key in done or not collections:
                continue
            try:
                with request_context(ref.client_id, None):
                    response = await self.knowledge.Search(
                        knowledge_pb2.SearchRequest(
                            query=query,
                            collections=collections,
                            k=self.settings.passages_per_query,
                            # The tenant's learning gaps count what research plans found.
                            origin=knowledge_pb2.SEARCH_ORIGIN_RESEARCH,
                        )
                    )
            except PERMANENT as exc:
                # An unknown collection, a refused query: retrying cannot help.
                raise ApplicationError(
                    f"knowledge search failed: {exc.details}", non_retryable=True
                ) from None
            passages = [_passage(p) for p in response.passages]
            await self.store.record_step(job.id, key, [vars(p) for p in passages])
            new = {p.key for p in passages} - found
            found |= new
            still_running = await self.store.update(
                ref.client_id,
                job.id,
                "query",
                f"searched knowledge for {query!r}: {len(passages)} passages, {len(new)} new",
                progress={"queries": i + 1, "sources_found": len(found)},
            )
            if not still_running:
                return
        await self.store.update(
            ref.client_id,
            job.id,
            "state",
            f"searched: {len(queries)} queries, {len(found)} passages",
            progress={"queries": len(queries), "sources_found": len(found)},
        )

    # -- fetch (the web path) ---------------------------------------------------------------

    @activity.defn(name="research.fetch")
    async def fetch(self, ref: JobRef) -> None:
        async with heartbeating():
            await self._fetch(ref)

    async def _fetch(self, ref: JobRef) -> None:
        """The web path (jobs/web.py): web search, fetch, dedupe, register and ingest, then the
        job's pages' passages from the research collection."""
        job = await self._job(ref)
        if job.ended or not job.scope.get("web"):
            return
        if self.web is None:
            raise ApplicationError(
                "web research needs a search provider (EDRS_RESEARCH_SEARCH_PROVIDER)",
                non_retryable=True,
            )
        await self.web.run(job, activity.heartbeat)

    # -- draft, verify, report --------------------------------------------------------------

    @activity.defn(name="research.draft")
    async def draft(self, ref: JobRef) -> None:
        async with heartbeating():
            await self._draft(ref)

    async def _draft(self, ref: JobRef) -> None:
        job = await self._job(ref)
        if job.ended:
            return
        found: dict[str, list[Passage]] = {}
        passages: dict[str, Passage] = {}
        for prefix in ("knowledge:", "research:"):
            for key, record in (await self.store.steps(job.id, prefix)).items():
                query = key.removeprefix(prefix)
                found.setdefault(query, []).extend(Passage.from_dict(p) for p in record.result)
                for p in found[query]:
                    passages.setdefault(p.key, p)
        for query in found:
            found[query].sort(key=lambda p: -p.score)
        await self.store.update(ref.client_id, job.id, "state", "scoring", state="scoring")
        sections = synthesis.draft(
            job.question, job.plan, found, claims_per_section=self.settings.claims_per_section
        )
        sources = await self._score(job, sections, passages)
        documents = {p.document_id for p in passages.values()}
        await self.store.update(
            ref.client_id,
            job.id,
            "scored",
            f"scored {len(documents)} sources",
            progress={"sources_scored": len(documents)},
        )
        await self.store.update(ref.client_id, job.id, "state", "drafting", state="drafting")
        synthesis.weigh(sections, passages, self.settings.min_credibility)
        for claim in (c for s in sections for c in s.claims):
            if claim.supported:
                await self._verify(job, claim, passages[claim.passage])
        report = build_report(job, sections, passages, sources)
        claims = [c for s in report.sections for c in s.claims]
        supported = sum(c.supported for c in claims)
        for c in claims:
            await self.store.update(
                ref.client_id,
                job.id,
                "claim",
                ("supported: " if c.supported else "flagged: ") + c.text[:300],
            )
        ended = await self.store.end(
            ref.client_id,
            job.id,
            states.COMPLETED,
            f"completed: {len(claims)} claims, {supported} supported, "
            f"{len(report.citations)} citations",
            report=report.SerializeToString(),
            progress={"claims": len(claims), "claims_supported": supported},
        )
        if ended is not None:
            with request_context(ref.client_id, None):
                await self._task_status(ended, task_pb2.TASK_STATUS_SUCCEEDED, report.summary)

    async def _score(
        self, job: JobRow, sections: list[synthesis.Section], passages: dict[str, Passage]
    ) -> dict[str, research_pb2.ReportSource]:
        """The job's web sources scored again with what the job knows across them: agreement
        (claims of other domains stating the same facts, or contradicting them) and cited_by (the
        job's other pages linking to it). Their passages take the new credibility."""
        if self.sources is None:
            return {}
        records = [r for r in await self.store.pages(job.id) if r.outcome == "fetched"]
        if not records:
            return {}
        domains = {p.source_id: p.url.split("/")[2] for p in passages.values() if p.source_id}
        agree, disagree = synthesis.agreement(sections, passages, domains)
        out: dict[str, research_pb2.ReportSource] = {}
        for record in records:
            if record.source_id is None:
                continue
            source = await self.sources.store.get(job.client_id, record.source_id)
            if source is None:
                continue
            sid = str(source.id)
            cited_by = sum(1 for r in records if r.url != record.url and record.url in r.links)
            score = self.sources.score(
                domain=source.domain,
                https=source.https,
                author=source.author,
                published=source.published_at,
                pinned=source.pinned,
                blocked=source.blocked,
                agreement=len(agree.get(sid, set())),
                disagreement=len(disagree.get(sid, set())),
                cited_by=cited_by,
            )
            await self.sources.store.rescore(job.client_id, source.id, score)
            for p in passages.values():
                if p.source_id == sid:
                    p.credibility = score.value
            entry = research_pb2.ReportSource(
                source_id=sid,
                url=source.url,
                title=source.title,
                credibility=score.value,
                reasons=[
                    research_pb2.CredibilityReason(
                        signal=r.signal, weight=r.weight, detail=r.detail
                    )
                    for r in score.reasons
                ],
                content_hash=source.content_hash,
            )
            if source.fetched_at is not None:
                entry.fetch_time.CopyFrom(timestamp(source.fetched_at))
            out[sid] = entry
        return out

    async def _verify(self, job: JobRow, claim: synthesis.Claim, passage: Passage) -> None:
        """The claim checked against its cited passage by reasoning's verify strategy; the
        verdict is recorded so a resumed job does not ask again."""
        key = f"verify:{claim_key(claim.text, passage.key)}"
        record = await self.store.step(job.id, key)
        if record is None:
            with request_context(job.client_id, None):
                result = await self._reason(
                    reasoning_pb2.ReasonRequest(
                        messages=[reasoning_pb2.ChatMessage(role="user", content=job.question)],
                        # The passage's sentences are the facts: the claim is held against
                        # each, not against the passage's average meaning.
                        context=[
                            reasoning_pb2.ContextItem(
                                id=f"{passage.key}:{i}", source="knowledge.chunk", text=fact
                            )
                            for i, fact in enumerate(
                                [*synthesis.sentences(passage.text), passage.text]
                            )
                        ],
                        strategy=reasoning_pb2.STRATEGY_VERIFY,
                        draft=claim.text,
                        labels={"research_job": str(job.id)},
                    )
                )
            verdict: dict[str, Any] = {
                "supported": not result.unsupported_claims,
                "support": result.confidence,
                "verdict": result.answer,
            }
            await self.store.record_step(job.id, key, verdict)
        else:
            verdict = record.result
        claim.support = float(verdict["support"])
        if not verdict["supported"]:
            claim.supported = False
            claim.note = (
                "the cited passage does not support it (verify: "
                + str(verdict["verdict"])[:200]
                + ")"
            )

    @activity.defn(name="research.end")
    async def end(self, end: JobEnd) -> None:
        ended = await self.store.end(
            end.client_id,
            UUID(end.job_id),
            end.state,
            f"{end.state}: {end.reason}",
            error=end.reason if end.state == states.FAILED else "",
        )
        job = ended or await self.store.get(end.client_id, UUID(end.job_id))
        if job is not None:
            with request_context(end.client_id, None):
                await self._task_status(job, TASK_STATUS[job.state], job.error or job.state)

    async def _task_status(self, job: JobRow, status: int, note: str) -> None:
        """Move the job's task (if it has one) along; an illegal move (already there) is fine."""
        if self.tasks is None or not job.task_id:
            return
        try:
            await self.tasks.TransitionTask(
                task_pb2.TransitionTaskRequest(id=job.task_id, status=status, note=note[:2000])  # type: ignore[arg-type]
            )
        except ServiceError as exc:
            log.info("task %s of job %s not moved: %s", job.task_id, job.id, exc.details)


def _schema_text() -> str:
    import json

    return json.dumps(planning.PLAN_SCHEMA)


def _passage(p: knowledge_pb2.Passage) -> Passage:
    return Passage(
        key=p.chunk_id,
        document_id=p.document_id,
        version=p.citation.document_version,
        start=p.citation.start,
        end=p.citation.end,
        text=p.text,
        content_hash=p.citation.content_hash,
        title=p.title,
        url=p.source or p.external_id,
        score=p.score,
        credibility=KNOWLEDGE_CREDIBILITY,
    )


def build_report(
    job: JobRow,
    sections: list[synthesis.Section],
    passages: dict[str, Passage],
    web_sources: dict[str, research_pb2.ReportSource],
) -> research_pb2.Report:
    numbers: dict[str, int] = {}
    report = research_pb2.Report(job_id=str(job.id), question=job.question, title=job.question)
    for section in sections:
        for claim in section.claims:
            if claim.passage not in numbers:
                numbers[claim.passage] = len(numbers) + 1
                p = passages[claim.passage]
                report.citations.append(
                    research_pb2.ReportCitation(
                        number=numbers[claim.passage],
                        source_id=p.source_id,
                        url=p.url,
                        title=p.title,
                        document_id=p.document_id,
                        chunk_id=p.key,
                        document_version=p.version,
                        start=p.start,
                        end=p.end,
                        passage=p.text,
                        content_hash=p.content_hash,
                    )
                )
                if p.fetch_time:
                    report.citations[-1].fetch_time.FromDatetime(
                        datetime.fromisoformat(p.fetch_time)
                    )
    summary: list[str] = []
    for section in sections:
        out = research_pb2.ReportSection(heading=section.heading)
        texts = []
        for claim in section.claims:
            n = numbers[claim.passage]
            note = claim.note
            for key, number in numbers.items():
                note = note.replace("{" + key + "}", f"[{number}]")
            out.claims.append(
                research_pb2.ReportClaim(
                    text=claim.text,
                    citations=[n],
                    supported=claim.supported,
                    support=claim.support,
                    note=note,
                )
            )
            texts.append(
                f"{claim.text} [{n}]" if claim.supported else f"(unverified) {claim.text} [{n}]"
            )
        out.text = " ".join(texts) if texts else "No passage found answers this."
        report.sections.append(out)
        best = next((c for c in out.claims if c.supported), None)
        if best is not None and len(summary) < 3:
            summary.append(f"{best.text} [{best.citations[0]}]")
    report.summary = " ".join(summary) or "No source found supports an answer to this question."
    cited = set(numbers)
    cited_sources = {passages[k].source_id or passages[k].document_id for k in cited}
    by_document: dict[str, research_pb2.ReportSource] = {}
    for sid, entry in web_sources.items():
        entry.cited = sid in cited_sources
        by_document[sid] = entry
    for p in passages.values():
        if p.source_id:
            continue
        known = by_document.get(p.document_id)
        if known is None:
            known = research_pb2.ReportSource(
                url=p.url,
                title=p.title,
                credibility=p.credibility,
                reasons=[
                    research_pb2.CredibilityReason(
                        signal="knowledge",
                        weight=p.credibility,
                        detail="a document of the tenant's own knowledge collections",
                    )
                ],
            )
            by_document[p.document_id] = known
        known.cited = known.cited or p.key in cited
    report.sources.extend(sorted(by_document.values(), key=lambda s: (-s.credibility, s.url)))
    return report

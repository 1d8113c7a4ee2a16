"""The research gRPC servicer's source RPCs: validates requests, scopes them to the caller's
tenant. (Jobs and reports: `jobs_server.JobRpcs`.)"""

from __future__ import annotations

from edrs_core import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ServicerContext,
    validation,
)
from edrs_core.context import require_client_id
from edrs_core.ids import parse_id
from edrs_core.outbound import OutboundPolicy
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc

from edrs_research import urls
from edrs_research.jobs_server import JobRpcs, JobRuntime
from edrs_research.sources import Sources
from edrs_research.store import Source, SourceFilter
from edrs_research.web.kit import ResearchWeb

MAX_TITLE = 500
MAX_DOMAIN = 253
_STATES = {
    "pending": research_pb2.SOURCE_STATE_PENDING,
    "fetched": research_pb2.SOURCE_STATE_FETCHED,
    "failed": research_pb2.SOURCE_STATE_FAILED,
}
_MASK_PATHS = ("title", "pinned", "blocked")


def to_proto(s: Source) -> research_pb2.Source:
    source = research_pb2.Source(
        id=str(s.id),
        url=s.url,
        title=s.title,
        credibility=s.credibility,
        create_time=timestamp(s.created_at),
        domain=s.domain,
        state=_STATES[s.state],
        fetch_error=s.fetch_error,
        reasons=[
            research_pb2.CredibilityReason(signal=r.signal, weight=r.weight, detail=r.detail)
            for r in s.reasons
        ],
        author=s.author,
        language=s.language,
        content_hash=s.content_hash,
        truncated=s.truncated,
        pinned=s.pinned,
        blocked=s.blocked,
        document_id=s.document_id,
        update_time=timestamp(s.updated_at),
    )
    if s.published_at is not None:
        source.published_time.CopyFrom(timestamp(s.published_at))
    if s.fetched_at is not None:
        source.fetch_time.CopyFrom(timestamp(s.fetched_at))
    return source


def _both(pinned: bool, blocked: bool, field: str) -> None:
    if pinned and blocked:
        raise InvalidArgument(f"{field} cannot be both pinned and blocked; choose one", field=field)


class SourceRpcs:
    """RegisterSource, GetSource, ListSources, RefetchSource, UpdateSource, DeleteSource: a mixin
    of the research servicer (not a servicer itself: edrs_research.server defines one)."""

    def __init__(self, sources: Sources, outbound: OutboundPolicy) -> None:
        self.sources = sources
        self.outbound = outbound

    async def _get(self, client_id: str, raw_id: str) -> Source:
        source_id = parse_id(raw_id, "id")
        found = await self.sources.store.get(client_id, source_id)
        if found is None:
            raise NotFound(f"source {source_id} not found", field="id")
        return found

    async def RegisterSource(  # noqa: N802 (gRPC method name)
        self, request: research_pb2.RegisterSourceRequest, context: ServicerContext
    ) -> research_pb2.Source:
        client_id = require_client_id()
        raw = validation.text(request.url, "url", max_length=urls.MAX_URL_LENGTH)
        try:
            source_url = urls.normalise(raw, self.outbound)
        except urls.UrlRefused as exc:
            raise InvalidArgument(f"url {exc}", field="url") from None
        title = validation.text(request.title, "title", max_length=MAX_TITLE, required=False)
        _both(request.pinned, request.blocked, "source")
        created = await self.sources.register(
            client_id,
            source_url,
            title=title,
            pinned=request.pinned,
            blocked=request.blocked,
        )
        if created is None:
            raise AlreadyExists(f"url {source_url.url} is already registered", field="url")
        return to_proto(created)

    async def GetSource(  # noqa: N802
        self, request: research_pb2.GetSourceRequest, context: ServicerContext
    ) -> research_pb2.Source:
        return to_proto(await self._get(require_client_id(), request.id))

    async def ListSources(  # noqa: N802
        self, request: research_pb2.ListSourcesRequest, context: ServicerContext
    ) -> research_pb2.ListSourcesResponse:
        client_id = require_client_id()
        domain = validation.text(request.domain, "domain", max_length=MAX_DOMAIN, required=False)
        if request.pinned_only and request.blocked_only:
            raise InvalidArgument(
                "pinned_only and blocked_only cannot both be set (no source is both)",
                field="blocked_only",
            )
        where = SourceFilter(
            domain=domain.lower().rstrip("."),
            pinned_only=request.pinned_only,
            blocked_only=request.blocked_only,
        )
        sources, token = await self.sources.store.list(
            client_id, request.page.page_token, request.page.page_size, where
        )
        return research_pb2.ListSourcesResponse(
            sources=[to_proto(s) for s in sources],
            page=common_pb2.PageInfo(next_page_token=token),
        )

    async def RefetchSource(  # noqa: N802
        self, request: research_pb2.RefetchSourceRequest, context: ServicerContext
    ) -> research_pb2.Source:
        client_id = require_client_id()
        source = await self._get(client_id, request.id)
        if source.blocked:
            raise FailedPrecondition(
                f"source {source.id} is blocked; unblock it (UpdateSource) to fetch it",
                field="id",
            )
        return to_proto(await self.sources.fetch(client_id, source))

    async def UpdateSource(  # noqa: N802
        self, request: research_pb2.UpdateSourceRequest, context: ServicerContext
    ) -> research_pb2.Source:
        client_id = require_client_id()
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgument(
                f"update_mask is required: name the fields to change ({', '.join(_MASK_PATHS)})",
                field="update_mask",
            )
        for i, path in enumerate(paths):
            if path not in _MASK_PATHS:
                raise InvalidArgument(
                    f"update_mask.paths[{i}] {path!r} is not a field UpdateSource can change; "
                    f"one of {', '.join(_MASK_PATHS)}",
                    field=f"update_mask.paths[{i}]",
                )
        given = request.source
        source_id = parse_id(given.id, "source.id")
        title = (
            validation.text(given.title, "source.title", max_length=MAX_TITLE, required=False)
            if "title" in paths
            else None
        )
        pinned = given.pinned if "pinned" in paths else None
        blocked = given.blocked if "blocked" in paths else None
        if pinned and blocked:
            _both(True, True, "source")
        try:
            updated = await self.sources.update(
                client_id, source_id, title=title, pinned=pinned, blocked=blocked
            )
        except ValueError:
            field = "source.pinned" if pinned else "source.blocked"
            raise InvalidArgument(
                f"{field}: a source cannot be both pinned and blocked; unset the other in the "
                "same update",
                field=field,
            ) from None
        if updated is None:
            raise NotFound(f"source {source_id} not found", field="source.id")
        return to_proto(updated)

    async def DeleteSource(  # noqa: N802
        self, request: research_pb2.DeleteSourceRequest, context: ServicerContext
    ) -> research_pb2.DeleteSourceResponse:
        client_id = require_client_id()
        source_id = parse_id(request.id, "id")
        if await self.sources.delete(client_id, source_id) is None:
            raise NotFound(f"source {source_id} not found", field="id")
        return research_pb2.DeleteSourceResponse()


class ResearchServicer(SourceRpcs, JobRpcs, research_pb2_grpc.ResearchServiceServicer):
    """The research servicer: the source RPCs and (with Temporal) the job RPCs. `web` is the
    service's one ResearchWeb (outbound client, fetcher, search provider, domain tiers)."""

    def __init__(
        self,
        sources: Sources,
        outbound: OutboundPolicy,
        web: ResearchWeb,
        jobs: JobRuntime | None = None,
    ) -> None:
        super().__init__(sources, outbound)
        self.web = web
        self.jobs = jobs

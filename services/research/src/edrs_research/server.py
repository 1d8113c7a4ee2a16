"""The research gRPC servicer: validates requests, scopes them to the caller's tenant."""

from __future__ import annotations

from edrs_core import AlreadyExists, InvalidArgument, ServicerContext, validation
from edrs_core.context import require_client_id
from edrs_core.outbound import OutboundPolicy
from edrs_core.protobuf import timestamp
from edrs_proto.common.v1 import common_pb2
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc

from edrs_research import credibility, urls
from edrs_research.jobs_server import JobRpcs, JobRuntime
from edrs_research.store import NewSource, ResearchStore, Source


def to_proto(s: Source) -> research_pb2.Source:
    return research_pb2.Source(
        id=str(s.id),
        url=s.url,
        title=s.title,
        credibility=s.credibility,
        create_time=timestamp(s.created_at),
    )


class ResearchServicer(JobRpcs, research_pb2_grpc.ResearchServiceServicer):
    def __init__(
        self, store: ResearchStore, outbound: OutboundPolicy, jobs: JobRuntime | None = None
    ) -> None:
        self.store = store
        self.outbound = outbound
        self.jobs = jobs

    async def RegisterSource(  # noqa: N802 (gRPC method name)
        self, request: research_pb2.RegisterSourceRequest, context: ServicerContext
    ) -> research_pb2.Source:
        client_id = require_client_id()
        raw = validation.text(request.url, "url", max_length=urls.MAX_URL_LENGTH)
        try:
            source_url = urls.normalise(raw, self.outbound)
        except urls.UrlRefused as exc:
            raise InvalidArgument(f"url {exc}", field="url") from None
        title = validation.text(request.title, "title", max_length=500, required=False)
        new = NewSource(
            url=source_url.url,
            title=title or source_url.url,
            credibility=credibility.prior(source_url),
        )
        created = await self.store.create(client_id, new)
        if created is None:
            raise AlreadyExists(f"url {source_url.url} is already registered", field="url")
        return to_proto(created)

    async def ListSources(  # noqa: N802
        self, request: research_pb2.ListSourcesRequest, context: ServicerContext
    ) -> research_pb2.ListSourcesResponse:
        client_id = require_client_id()
        sources, token = await self.store.list(
            client_id, request.page.page_token, request.page.page_size
        )
        return research_pb2.ListSourcesResponse(
            sources=[to_proto(s) for s in sources],
            page=common_pb2.PageInfo(next_page_token=token),
        )

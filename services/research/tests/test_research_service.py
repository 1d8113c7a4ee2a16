"""The research service's source RPCs over real gRPC, against embedded PostgreSQL, Redis and NATS,
the real knowledge service (on the real reasoning service's embeddings), and the mini-web on
loopback: registering fetches, reads, ingests and scores at once."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from edrs_core import testing
from edrs_proto.common.v1 import common_pb2
from edrs_proto.knowledge.v1 import knowledge_pb2, knowledge_pb2_grpc
from edrs_proto.research.v1 import research_pb2, research_pb2_grpc
from edrs_research.app import definition
from edrs_research.miniweb import MiniWeb, Page, Site
from google.protobuf.field_mask_pb2 import FieldMask

pytestmark = pytest.mark.integration

TENANT_A = testing.tenant_metadata("tenant-a")
TENANT_B = testing.tenant_metadata("tenant-b")
NEWS = "news.miniweb.test"
WIKI = "wiki.miniweb.test"
FORUM = "forum.miniweb.test"
FETCHED = research_pb2.SOURCE_STATE_FETCHED
FAILED = research_pb2.SOURCE_STATE_FAILED

ARTICLE = """<!doctype html>
<html lang="en"><head><title>Lunar orbit facts</title>
<meta name="author" content="Jane Roe">
<meta property="article:published_time" content="2025-06-01">
</head><body><nav><a href="/">Home</a></nav><article><h1>Lunar orbit facts</h1>
<p>The Moon orbits the Earth once every 27.3 days. Its mean distance from the Earth is about
384,400 kilometres, and the same side always faces the Earth because it is tidally locked.</p>
<p>Eclipses happen when the Sun, the Earth and the Moon line up near the nodes of the orbit.</p>
</article><footer>Copyright Miniweb</footer></body></html>"""


def article(marker: str) -> Page:
    return Page(ARTICLE.replace("Eclipses happen", f"{marker}. Eclipses happen"))


# Pages are added to these dicts by the tests while the mini-web runs.
PAGES: dict[str, dict[str, Any]] = {NEWS: {}, WIKI: {}, FORUM: {}}


@pytest.fixture(scope="module")
async def miniweb() -> AsyncIterator[MiniWeb]:
    sites = [
        Site(NEWS, pages=PAGES[NEWS], robots="User-agent: *\nDisallow: /private/\n"),
        Site(WIKI, pages=PAGES[WIKI]),
        Site(FORUM, pages=PAGES[FORUM]),
    ]
    async with MiniWeb(sites) as web:
        yield web


@pytest.fixture(scope="module")
async def research(
    postgres_engine, redis_engine, nats_engine, knowledge, miniweb
) -> AsyncIterator[testing.RunningService]:
    settings: dict[str, Any] = testing.engine_settings(
        postgres_engine, redis_engine, nats_engine, database="test_research", redis_db=6
    )
    # The operator's exceptions, as EDRS_RESEARCH_OUTBOUND_ALLOW would set them: one intranet
    # network, and the mini-web's names (which EDRS_RESEARCH_OUTBOUND_RESOLVE maps to loopback);
    # web search on the mini-web's SearxNG endpoint.
    web = miniweb.research_settings()
    settings.update(web)
    settings["outbound_allow"] = ("10.20.0.0/16", *web["outbound_allow"])
    settings["outbound_connect_timeout_seconds"] = 2.0
    settings["fetch_host_interval_seconds"] = 0.0
    settings["peers"] = {"knowledge": knowledge.grpc_address}
    settings["rpc_timeout_seconds"] = 60.0
    async with testing.running_service(definition, **settings) as svc:
        yield svc


@pytest.fixture
def stub(research: testing.RunningService) -> research_pb2_grpc.ResearchServiceStub:
    return research_pb2_grpc.ResearchServiceStub(research.channel)


@pytest.fixture
def documents(knowledge: testing.RunningService) -> knowledge_pb2_grpc.KnowledgeServiceStub:
    return knowledge_pb2_grpc.KnowledgeServiceStub(knowledge.channel)


def page_url(web: MiniWeb, host: str, page: Page | None = None, path: str = "") -> str:
    """A new page on `host` (a missing one when `page` is None), its URL."""
    path = path or f"/{uuid.uuid4().hex}"
    if page is not None:
        PAGES[host][path] = page
    return web.url(host, path)


async def register(stub, url: str, tenant=TENANT_A, **fields) -> research_pb2.Source:  # type: ignore[no-untyped-def]
    return await stub.RegisterSource(
        research_pb2.RegisterSourceRequest(url=url, **fields), metadata=tenant
    )


async def test_registering_fetches_reads_ingests_and_scores_the_page(
    stub, documents, miniweb, research
) -> None:
    url = page_url(miniweb, NEWS, article("Registered page one"))
    created = await register(stub, url)
    assert uuid.UUID(created.id)
    assert created.url == url and created.domain == NEWS
    assert created.state == FETCHED and created.fetch_error == ""
    assert created.title == "Lunar orbit facts"
    assert created.author == "Jane Roe"
    assert created.published_time.ToDatetime().date().isoformat() == "2025-06-01"
    assert created.language == "en"
    assert created.truncated is False
    assert created.fetch_time.seconds > 0 and created.update_time.seconds > 0
    # 0.5 base, -0.10 plain http, +0.05 author, +0.05 dated: no tier for miniweb.test.
    assert created.credibility == pytest.approx(0.5)
    assert {(r.signal, round(r.weight, 2)) for r in created.reasons} == {
        ("https", -0.1),
        ("author", 0.05),
        ("date", 0.05),
    }
    # The text is a document of the tenant's research collection, keyed by the URL.
    document = await documents.GetDocument(
        knowledge_pb2.GetDocumentRequest(id=created.document_id), metadata=TENANT_A
    )
    assert document.external_id == url
    assert document.metadata["domain"] == NEWS
    assert document.metadata["url"] == url
    collection = await documents.GetCollection(
        knowledge_pb2.GetCollectionRequest(id="research"), metadata=TENANT_A
    )
    assert document.collection_id == collection.id

    async def indexed() -> bool:
        got = await documents.GetDocument(
            knowledge_pb2.GetDocumentRequest(id=created.document_id), metadata=TENANT_A
        )
        assert got.state != knowledge_pb2.DOCUMENT_STATE_FAILED, got.failure
        return bool(got.state == knowledge_pb2.DOCUMENT_STATE_INDEXED)

    await testing.wait_until(indexed, 300, "the page's document to be indexed")
    stored = await documents.ReadDocumentText(
        knowledge_pb2.ReadDocumentTextRequest(document_id=created.document_id), metadata=TENANT_A
    )
    assert "Registered page one" in stored.text
    assert hashlib.sha256(stored.text.encode()).hexdigest() == created.content_hash
    [event] = await testing.published_events(research, "research.source_registered", created.id)
    assert event["payload"] == {
        "source_id": created.id,
        "url": url,
        "credibility": pytest.approx(created.credibility),
        "domain": NEWS,
        "state": "fetched",
        "content_hash": created.content_hash,
        "document_id": created.document_id,
    }
    assert (event["client_id"], event["source_container"]) == (
        testing.tenant_of(TENANT_A),
        "research",
    )
    assert (
        await stub.GetSource(research_pb2.GetSourceRequest(id=created.id), metadata=TENANT_A)
        == created
    )


async def test_a_page_that_cannot_be_fetched_is_registered_failed_with_its_reason(
    stub, miniweb, research
) -> None:
    private = f"/private/{uuid.uuid4().hex}"
    disallowed = page_url(miniweb, NEWS, article("private"), path=private)
    refused = await register(stub, disallowed)
    assert refused.state == FAILED
    assert refused.fetch_error.startswith("robots: ")
    assert "disallows /private/" in refused.fetch_error
    assert refused.document_id == "" and refused.content_hash == ""
    assert not [r for r in miniweb.requests if r.path == private]
    missing = await register(stub, page_url(miniweb, WIKI))
    assert (missing.state, missing.fetch_error.split(":")[0]) == (FAILED, "status")
    pdf = await register(
        stub, page_url(miniweb, WIKI, Page(b"%PDF-1.4", content_type="application/pdf"))
    )
    assert pdf.fetch_error.startswith("content_type: ") and "application/pdf" in pdf.fetch_error
    [event] = await testing.published_events(research, "research.source_registered", refused.id)
    assert event["payload"]["state"] == "failed"
    listed = await testing.collect_pages(
        stub.ListSources,
        research_pb2.ListSourcesRequest,
        "sources",
        page_size=100,
        metadata=TENANT_A,
    )
    assert {refused.id, missing.id, pdf.id} <= {s.id for s in listed}


async def test_registering_the_same_page_again_is_already_exists(stub, miniweb) -> None:
    url = page_url(miniweb, NEWS, article("twice"))
    await register(stub, url)
    host_upper = url.replace(NEWS, NEWS.upper())
    err = await testing.expect_rpc_error(
        register(stub, host_upper + "#top"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert f"url {url}" in err.details()


async def test_refetch_updates_the_same_document(stub, documents, miniweb) -> None:
    path = f"/{uuid.uuid4().hex}"
    url = page_url(miniweb, WIKI, article("First version"), path=path)
    first = await register(stub, url)
    PAGES[WIKI][path] = article("Second version")
    again = await stub.RefetchSource(
        research_pb2.RefetchSourceRequest(id=first.id), metadata=TENANT_A
    )
    assert again.id == first.id and again.state == FETCHED
    assert again.document_id == first.document_id
    assert again.content_hash != first.content_hash
    document = await documents.GetDocument(
        knowledge_pb2.GetDocumentRequest(id=again.document_id), metadata=TENANT_A
    )
    assert document.version == 2
    # A page that became unreachable: the source FAILS, keeping what it read before.
    del PAGES[WIKI][path]
    gone = await stub.RefetchSource(
        research_pb2.RefetchSourceRequest(id=first.id), metadata=TENANT_A
    )
    assert gone.state == FAILED and "404" in gone.fetch_error
    assert gone.content_hash == again.content_hash


async def test_pin_block_and_title_are_updated_and_rescored(stub, miniweb) -> None:
    source = await register(stub, page_url(miniweb, FORUM, article("pin me")))

    async def update(fields: research_pb2.Source, *paths: str) -> research_pb2.Source:
        fields.id = source.id
        return await stub.UpdateSource(
            research_pb2.UpdateSourceRequest(source=fields, update_mask=FieldMask(paths=paths)),
            metadata=TENANT_A,
        )

    pinned = await update(research_pb2.Source(pinned=True, title="Trusted"), "pinned", "title")
    assert (pinned.pinned, pinned.blocked, pinned.title) == (True, False, "Trusted")
    assert pinned.credibility >= 0.75
    assert pinned.reasons[-1].signal == "pinned"
    await testing.expect_rpc_error(
        update(research_pb2.Source(blocked=True), "blocked"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "cannot be both pinned and blocked",
    )
    blocked = await update(research_pb2.Source(blocked=True, pinned=False), "blocked", "pinned")
    assert (blocked.pinned, blocked.blocked, blocked.credibility) == (False, True, 0.0)
    assert [r.signal for r in blocked.reasons] == ["blocked"]
    assert blocked.title == "Trusted"  # not in the mask: kept
    await testing.expect_rpc_error(
        stub.RefetchSource(research_pb2.RefetchSourceRequest(id=source.id), metadata=TENANT_A),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is blocked",
    )
    cleared = await update(research_pb2.Source(title=""), "title")
    assert cleared.title == "Lunar orbit facts"  # the page's title again


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ((), "update_mask is required"),
        (("url",), "update_mask.paths[0] 'url' is not a field UpdateSource can change"),
    ],
)
async def test_a_bad_update_mask_names_the_field(stub, miniweb, paths, message) -> None:
    await testing.expect_rpc_error(
        stub.UpdateSource(
            research_pb2.UpdateSourceRequest(
                source=research_pb2.Source(id=str(uuid.uuid4())), update_mask=FieldMask(paths=paths)
            ),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
    )


async def test_a_source_registered_blocked_is_never_fetched(stub, miniweb) -> None:
    path = f"/{uuid.uuid4().hex}"
    url = page_url(miniweb, FORUM, article("blocked"), path=path)
    tenant = testing.tenant_metadata(f"tenant-{uuid.uuid4().hex}")
    source = await register(stub, url, tenant, blocked=True)
    assert (source.state, source.blocked, source.credibility) == (FAILED, True, 0.0)
    assert "blocked by the tenant" in source.fetch_error
    # The domain is blocked for the tenant: another of its pages is not fetched either.
    other_path = f"/{uuid.uuid4().hex}"
    other = await register(stub, page_url(miniweb, FORUM, article("x"), path=other_path), tenant)
    assert other.state == FAILED and f"domain {FORUM} is blocked" in other.fetch_error
    assert not [r for r in miniweb.requests if r.path in (path, other_path)]
    await testing.expect_rpc_error(
        register(stub, page_url(miniweb, FORUM), tenant, pinned=True, blocked=True),
        grpc.StatusCode.INVALID_ARGUMENT,
        "cannot be both pinned and blocked",
    )


async def test_list_filters_by_domain_pin_and_block(stub, miniweb) -> None:
    tenant = testing.tenant_metadata(f"tenant-{uuid.uuid4().hex}")
    news = await register(stub, page_url(miniweb, NEWS, article("n")), tenant, pinned=True)
    wiki = await register(stub, page_url(miniweb, WIKI, article("w")), tenant)
    forum = await register(stub, page_url(miniweb, FORUM, article("f")), tenant, blocked=True)

    async def ids(**filters: Any) -> list[str]:
        found = await stub.ListSources(research_pb2.ListSourcesRequest(**filters), metadata=tenant)
        return [s.id for s in found.sources]

    assert await ids() == [forum.id, wiki.id, news.id]  # newest first
    assert await ids(domain=WIKI.upper()) == [wiki.id]
    assert await ids(pinned_only=True) == [news.id]
    assert await ids(blocked_only=True) == [forum.id]
    await testing.expect_rpc_error(
        stub.ListSources(
            research_pb2.ListSourcesRequest(pinned_only=True, blocked_only=True), metadata=tenant
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "pinned_only and blocked_only",
    )


async def test_delete_removes_the_source_and_its_document(stub, documents, miniweb) -> None:
    source = await register(stub, page_url(miniweb, NEWS, article("delete me")))
    await stub.DeleteSource(research_pb2.DeleteSourceRequest(id=source.id), metadata=TENANT_A)
    await testing.expect_rpc_error(
        stub.GetSource(research_pb2.GetSourceRequest(id=source.id), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
    )
    await testing.expect_rpc_error(
        documents.GetDocument(
            knowledge_pb2.GetDocumentRequest(id=source.document_id), metadata=TENANT_A
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await testing.expect_rpc_error(
        stub.DeleteSource(research_pb2.DeleteSourceRequest(id=source.id), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_tenants_sources_are_isolated(stub, documents, miniweb) -> None:
    url = page_url(miniweb, WIKI, article("shared page"))
    mine = await register(stub, url, TENANT_A)
    theirs = await register(stub, url, TENANT_B)
    assert mine.id != theirs.id
    assert mine.document_id != theirs.document_id  # each tenant's own research collection
    listed = await testing.collect_pages(
        stub.ListSources,
        research_pb2.ListSourcesRequest,
        "sources",
        page_size=100,
        metadata=TENANT_B,
    )
    assert mine.id not in {s.id for s in listed} and theirs.id in {s.id for s in listed}
    for call in (
        stub.GetSource(research_pb2.GetSourceRequest(id=mine.id), metadata=TENANT_B),
        stub.RefetchSource(research_pb2.RefetchSourceRequest(id=mine.id), metadata=TENANT_B),
        stub.UpdateSource(
            research_pb2.UpdateSourceRequest(
                source=research_pb2.Source(id=mine.id, pinned=True),
                update_mask=FieldMask(paths=["pinned"]),
            ),
            metadata=TENANT_B,
        ),
        stub.DeleteSource(research_pb2.DeleteSourceRequest(id=mine.id), metadata=TENANT_B),
    ):
        await testing.expect_rpc_error(call, grpc.StatusCode.NOT_FOUND)
    await testing.expect_rpc_error(
        documents.GetDocument(
            knowledge_pb2.GetDocumentRequest(id=mine.document_id), metadata=TENANT_B
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    still = await stub.GetSource(research_pb2.GetSourceRequest(id=mine.id), metadata=TENANT_A)
    assert (still.pinned, still.state) == (False, FETCHED)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (research_pb2.RegisterSourceRequest(url=""), "url is required"),
        (
            research_pb2.RegisterSourceRequest(url="ftp://example.com/"),
            "url must use http or https",
        ),
        (
            research_pb2.RegisterSourceRequest(url="http://localhost:8080/admin"),
            "url host localhost",
        ),
        (
            research_pb2.RegisterSourceRequest(url="http://169.254.169.254/latest/meta-data"),
            "url host 169.254.169.254 is a link-local address",
        ),
        (
            research_pb2.RegisterSourceRequest(url="https://admin:pw@example.com/"),
            "url must not carry credentials",
        ),
        (
            research_pb2.RegisterSourceRequest(url="https://example.com/", title="t" * 501),
            "title is 501 characters long",
        ),
    ],
)
async def test_invalid_register_names_the_field(stub, request_, message) -> None:
    await testing.expect_rpc_error(
        stub.RegisterSource(request_, metadata=TENANT_A), grpc.StatusCode.INVALID_ARGUMENT, message
    )


async def test_loopback_by_address_is_refused_though_the_miniweb_names_are_allowed(
    stub, miniweb
) -> None:
    await testing.expect_rpc_error(
        register(stub, f"http://127.0.0.1:{miniweb.port}/"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "url host 127.0.0.1 is a loopback address",
    )


async def test_the_operators_outbound_allow_rule_opens_that_network_only(stub) -> None:
    tenant = testing.tenant_metadata(f"tenant-{uuid.uuid4().hex}")
    inside = f"http://10.20.3.4/{uuid.uuid4().hex}"
    created = await register(stub, inside, tenant)
    assert created.url == inside
    # Allowed, so it was requested; no page is served there (what answers, if anything, depends
    # on the machine's network): registered, FAILED with why.
    assert created.state == FAILED
    assert created.fetch_error.split(":")[0] in ("connection", "timeout", "status")
    await testing.expect_rpc_error(
        register(stub, "http://10.21.0.1/", tenant),
        grpc.StatusCode.INVALID_ARGUMENT,
        "url host 10.21.0.1 is a private address",
    )


async def test_call_without_tenant_is_refused(stub, miniweb) -> None:
    await testing.expect_refused_without_tenant(
        stub.RegisterSource(research_pb2.RegisterSourceRequest(url=page_url(miniweb, NEWS))),
        stub.ListSources(research_pb2.ListSourcesRequest()),
        stub.GetSource(research_pb2.GetSourceRequest(id=str(uuid.uuid4()))),
    )


async def test_list_pages_through_every_source_once(stub, miniweb) -> None:
    tenant = testing.tenant_metadata(f"tenant-{uuid.uuid4()}")
    made = []
    for _ in range(5):
        s = await register(stub, page_url(miniweb, WIKI), tenant)
        made.append(s.id)
    sources = await testing.collect_pages(
        stub.ListSources, research_pb2.ListSourcesRequest, "sources", page_size=2, metadata=tenant
    )
    assert [s.id for s in sources] == list(reversed(made))


async def test_bad_ids_and_page_tokens_are_refused(stub) -> None:
    await testing.expect_rpc_error(
        stub.ListSources(
            research_pb2.ListSourcesRequest(page=common_pb2.PageRequest(page_token="garbage!")),
            metadata=TENANT_A,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page.page_token",
    )
    await testing.expect_rpc_error(
        stub.GetSource(research_pb2.GetSourceRequest(id="nope"), metadata=TENANT_A),
        grpc.StatusCode.INVALID_ARGUMENT,
        "id must be a UUID",
    )
    await testing.expect_rpc_error(
        stub.GetSource(research_pb2.GetSourceRequest(id=str(uuid.uuid4())), metadata=TENANT_A),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_the_job_path_records_a_fetched_page_once_per_url(stub, miniweb, research) -> None:
    """What research jobs use: fetch, ingest for a tenant outside a request, score, upsert."""
    sources = research.servicer("ResearchService").sources
    client_id = f"tenant-{uuid.uuid4().hex}"
    tenant = testing.tenant_metadata(client_id)
    path = f"/{uuid.uuid4().hex}"
    url = page_url(miniweb, NEWS, article("Job page"), path=path)
    assert await sources.store.get_by_url(client_id, url) is None
    page = await sources.fetcher.fetch(url)
    document_id = await sources.sink.ingest_page(page, client_id=client_id)
    pinned, blocked = await sources.store.domain_flags(client_id, page.domain)
    score = sources.score_page(page, pinned=pinned, blocked=blocked)
    created = await sources.store.upsert_fetched(client_id, page, score, document_id)
    assert (created.url, created.state, created.document_id) == (url, "fetched", document_id)
    assert created.credibility == score.value and created.reasons == score.reasons
    # Again (a retried activity): the same source and document, announced once.
    again = await sources.store.upsert_fetched(client_id, page, score, document_id)
    assert again.id == created.id
    assert await sources.sink.ingest_page(page, client_id=client_id) == document_id
    assert (await sources.store.get_by_url(client_id, url)).id == created.id  # type: ignore[union-attr]
    events = await testing.published_events(research, "research.source_registered", str(created.id))
    assert len(events) == 1
    # The tenant's pins and blocks are per domain for jobs.
    assert await sources.store.domain_flags(client_id, NEWS) == (False, False)
    await stub.UpdateSource(
        research_pb2.UpdateSourceRequest(
            source=research_pb2.Source(id=str(created.id), blocked=True),
            update_mask=FieldMask(paths=["blocked"]),
        ),
        metadata=tenant,
    )
    assert await sources.store.domain_flags(client_id, NEWS) == (False, True)
    assert await sources.store.domain_flags("another-tenant", NEWS) == (False, False)


async def test_a_text_too_large_for_one_message_is_streamed_to_knowledge(
    documents, miniweb, research
) -> None:
    from edrs_research.knowledge_sink import KnowledgeSink

    sources = research.servicer("ResearchService").sources
    # A limit of 100 bytes sends this page the way a multi-megabyte one goes: UploadDocument.
    sink = KnowledgeSink(sources.sink.knowledge, max_message_text=100)
    client_id = f"tenant-{uuid.uuid4().hex}"
    tenant = testing.tenant_metadata(client_id)
    page = await sources.fetcher.fetch(page_url(miniweb, WIKI, article("Streamed page")))
    assert len(page.text.encode()) > 100
    document_id = await sink.ingest_page(page, client_id=client_id)
    document = await documents.GetDocument(
        knowledge_pb2.GetDocumentRequest(id=document_id), metadata=tenant
    )
    assert document.external_id == page.url
    assert document.content_hash == page.content_hash  # the same UTF-8 bytes

    async def indexed() -> bool:
        got = await documents.GetDocument(
            knowledge_pb2.GetDocumentRequest(id=document_id), metadata=tenant
        )
        assert got.state != knowledge_pb2.DOCUMENT_STATE_FAILED, got.failure
        return bool(got.state == knowledge_pb2.DOCUMENT_STATE_INDEXED)

    await testing.wait_until(indexed, 300, "the streamed page to be indexed")
    stored = await documents.ReadDocumentText(
        knowledge_pb2.ReadDocumentTextRequest(document_id=document_id), metadata=tenant
    )
    assert stored.text == page.text
    # The same page through one message is the same document, unchanged.
    assert await sources.sink.ingest_page(page, client_id=client_id) == document_id


async def test_the_service_searches_the_miniweb_it_was_configured_with(miniweb, research) -> None:
    servicer = research.servicer("ResearchService")
    url = page_url(miniweb, WIKI, article("Selenography zebra"))
    # app.py built one ResearchWeb from the settings: its search provider is the mini-web's
    # SearxNG endpoint, and the source RPCs fetch through the same client.
    assert servicer.web.search.name == "searxng"
    assert servicer.sources.fetcher is servicer.web.fetcher
    hits = await servicer.web.search.search("selenography zebra", limit=5)
    assert hits[0].url == url
    page = await servicer.web.fetcher.fetch(hits[0].url)
    assert "Selenography zebra" in page.text

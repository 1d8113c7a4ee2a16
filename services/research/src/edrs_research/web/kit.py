"""Everything of the web a research service holds, built once from its settings:

    web = ResearchWeb.from_settings(rt.settings)
    rt.on_close(web.aclose)
    hits = await web.search.search("moon orbit", limit=10)
    page = await web.fetcher.fetch(hits[0].url, host_rules=HostRules.parse(allow=..., deny=...))
    tier = web.tiers.tier_of(page.domain)

One outbound client (SSRF policy, limits, the resolve setting) is shared by the fetcher and the
search provider, so both pass the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edrs_core.outbound import OutboundClient

from edrs_research.credibility import DomainTiers
from edrs_research.web.fetch import Fetcher
from edrs_research.web.search import SearchProvider

if TYPE_CHECKING:
    from edrs_research.config import ResearchSettings


@dataclass
class ResearchWeb:
    client: OutboundClient
    fetcher: Fetcher
    search: SearchProvider
    tiers: DomainTiers

    @classmethod
    def from_settings(cls, settings: ResearchSettings) -> ResearchWeb:
        client = settings.outbound_client(user_agent=settings.fetch_user_agent)
        tiers = settings.domain_tiers()
        return cls(
            client=client,
            fetcher=Fetcher(client, settings.fetch_limits(), tiers=tiers),
            search=settings.search(client),
            tiers=tiers,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

"""The web side of research: search providers, the page fetcher, near-duplicate detection."""

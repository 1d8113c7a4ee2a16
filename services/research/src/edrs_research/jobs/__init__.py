"""Research jobs: a question answered by a durable workflow (plan, search, fetch, score, draft,
verify) into a report whose claims cite knowledge passages (docs/research.md)."""

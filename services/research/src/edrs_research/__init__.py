"""EDRS research service: the sources a tenant's research draws on, and how credible they are."""

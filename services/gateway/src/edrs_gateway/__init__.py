"""EDRS gateway service: tenants today; the public API, authentication and rate limits come next."""

"""EDRS knowledge service: the documents a tenant has ingested, and search over them."""

"""Generated package for edrs.integration.v1 (do not edit; see scripts/gen_protos.py)."""

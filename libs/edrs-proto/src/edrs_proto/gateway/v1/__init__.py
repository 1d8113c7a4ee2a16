"""Generated package for edrs.gateway.v1 (do not edit; see scripts/gen_protos.py)."""

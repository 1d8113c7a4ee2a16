"""Generated package for edrs.gateway (do not edit; see scripts/gen_protos.py)."""

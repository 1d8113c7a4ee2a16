"""Generated package for edrs.research.v1 (do not edit; see scripts/gen_protos.py)."""

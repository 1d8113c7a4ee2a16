"""Generated package for edrs.reasoning.v1 (do not edit; see scripts/gen_protos.py)."""

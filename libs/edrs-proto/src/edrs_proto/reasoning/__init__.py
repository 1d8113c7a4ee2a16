"""Generated package for edrs.reasoning (do not edit; see scripts/gen_protos.py)."""

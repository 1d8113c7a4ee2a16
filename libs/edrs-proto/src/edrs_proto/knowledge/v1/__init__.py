"""Generated package for edrs.knowledge.v1 (do not edit; see scripts/gen_protos.py)."""

"""Generated package for edrs.knowledge (do not edit; see scripts/gen_protos.py)."""

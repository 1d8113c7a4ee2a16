"""Generated package for edrs.research (do not edit; see scripts/gen_protos.py)."""

"""Generated package for edrs.memory (do not edit; see scripts/gen_protos.py)."""

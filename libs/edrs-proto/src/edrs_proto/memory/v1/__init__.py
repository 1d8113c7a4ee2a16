"""Generated package for edrs.memory.v1 (do not edit; see scripts/gen_protos.py)."""

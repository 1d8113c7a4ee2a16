"""Generated package for edrs.persona (do not edit; see scripts/gen_protos.py)."""

"""Generated package for edrs.persona.v1 (do not edit; see scripts/gen_protos.py)."""

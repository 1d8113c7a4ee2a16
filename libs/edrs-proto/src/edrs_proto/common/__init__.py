"""Generated package for edrs.common (do not edit; see scripts/gen_protos.py)."""

"""Generated package for edrs.integration (do not edit; see scripts/gen_protos.py)."""

"""Generated package for edrs.common.v1 (do not edit; see scripts/gen_protos.py)."""

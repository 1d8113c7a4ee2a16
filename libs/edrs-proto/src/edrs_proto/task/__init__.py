"""Generated package for edrs.task (do not edit; see scripts/gen_protos.py)."""

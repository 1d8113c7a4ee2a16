"""Generated package for edrs.task.v1 (do not edit; see scripts/gen_protos.py)."""

"""pymilvus, imported without its side effect on the process environment.

pymilvus calls python-dotenv's `load_dotenv()` when it is imported (pymilvus/settings.py), which
copies a `.env` file found from the working directory into `os.environ`. Run from this repository,
that is docker-compose's `.env`, and every `EDRS_*` setting in it (database URLs, secrets, the
environment) would silently become this process's settings. Variables it adds are removed again;
it never overrides one already set.
"""

from __future__ import annotations

import os

_before = set(os.environ)
try:
    from pymilvus import DataType, MilvusClient
finally:
    for _added in set(os.environ) - _before:
        del os.environ[_added]
    del _before

__all__ = ["DataType", "MilvusClient"]

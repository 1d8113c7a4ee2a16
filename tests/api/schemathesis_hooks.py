"""Schemathesis hooks for tests/api/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

The knowledge import route takes `application/x-ndjson` (one JSON document per line), a media type
schemathesis has no serializer for: without this one it reports the operation as an error and
never sends a case. The schema of that body is the array of documents, serialized line by line.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    items = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)

"""What a reply cites: the sources given to the model, as the turn's `citations`, each marked with
whether the reply's text refers to it by its number.

Pure: no I/O, unit-tested."""

from __future__ import annotations

import re
from collections.abc import Sequence

from edrs_proto.persona.v1 import persona_pb2

from edrs_persona.prompt import Source

# "[2]", "[1, 3]", "[1][2]": the ways a model writes markers; any number inside brackets counts.
_MARKERS = re.compile(r"\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]")


def cited_markers(reply: str) -> set[int]:
    """The source numbers the reply refers to."""
    return {int(n) for group in _MARKERS.findall(reply) for n in group.split(",")}


def citations(sources: Sequence[Source], reply: str) -> list[persona_pb2.Citation]:
    """`sources[i]` was given to the model as [i + 1]."""
    cited = cited_markers(reply)
    return [
        persona_pb2.Citation(
            marker=marker,
            cited=marker in cited,
            document_id=source.document_id,
            external_id=source.external_id,
            collection_id=source.collection_id,
            title=source.title,
            page=source.page,
            heading_path=source.heading_path,
            start_offset=source.start,
            end_offset=source.end,
            text=source.text,
            score=source.score,
            chunk_id=source.chunk_id,
            content_hash=source.content_hash,
        )
        for marker, source in enumerate(sources, start=1)
    ]

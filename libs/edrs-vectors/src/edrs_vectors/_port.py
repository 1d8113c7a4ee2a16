"""The vector-index port: what every adapter offers, and the input checks they all share.

Every read and write names its tenant, and every search names the collections it may look in:
the adapters push both into the engine's own query (a WHERE clause, a payload filter, a Weaviate
tenant), so a vector of another tenant is never fetched, let alone filtered out afterwards.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

import numpy as np

# Engines cap what one request may ask for (Milvus: 16384); far above what a reader looks at.
MAX_K = 1000
# One payload is metadata about a vector (a chunk's document, page, offsets), not a document:
# Milvus caps a JSON field at 64 KiB, and the other adapters keep the same limit so that moving
# between engines never starts failing on data that fitted before.
MAX_PAYLOAD_BYTES = 65_536
MAX_NAME_LENGTH = 256
MAX_DIMENSION = 16_000

# Engine-side keys are derived from (tenant, id), so two tenants' records never share a key even
# when a client reuses an id: one tenant cannot overwrite another's vector in engines whose point
# ids are global (Qdrant, Milvus, Weaviate).
_KEY_NAMESPACE = UUID("8f5b7c3e-5a1d-4c43-9a55-2f0f3f4f6d10")


class Metric(StrEnum):
    """How vectors are compared; a hit's score is always "higher is closer"."""

    COSINE = "cosine"  # score: cosine similarity, in [-1, 1]
    DOT = "dot"  # score: inner product
    L2 = "l2"  # score: minus the Euclidean distance


class VectorIndexError(Exception):
    """An index operation failed in a way the caller can act on."""


class InvalidVectorInput(VectorIndexError, ValueError):
    """The request itself is wrong (empty batch, bad tenant, wrong query dimension...)."""


class IndexMismatch(VectorIndexError):
    """The engine already holds an index of this name with another dimension or metric."""


@dataclass(frozen=True)
class IndexSpec:
    """One index: a table (pgvector) or collection (Milvus, Qdrant, Weaviate) in the engine."""

    name: str
    dimension: int
    metric: Metric = Metric.COSINE

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.name.isascii() or self.name.startswith("_"):
            raise InvalidVectorInput(
                f"index name {self.name!r} must be an ASCII identifier not starting with '_'"
            )
        if len(self.name) > 48:
            raise InvalidVectorInput(f"index name {self.name!r} is longer than 48 characters")
        if not 1 <= self.dimension <= MAX_DIMENSION:
            raise InvalidVectorInput(
                f"dimension must be between 1 and {MAX_DIMENSION}, got {self.dimension}"
            )
        object.__setattr__(self, "metric", Metric(self.metric))


@dataclass(frozen=True)
class VectorRecord:
    """One vector and where it belongs: a tenant, a collection of that tenant, a document."""

    id: UUID
    vector: Sequence[float]
    tenant: str
    collection: str
    document_id: str
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rejection:
    """A record of an upsert batch that was not written, and why; the rest were."""

    index: int  # its position in the batch
    id: object
    reason: str


@dataclass(frozen=True)
class UpsertResult:
    upserted: int
    rejected: tuple[Rejection, ...] = ()


@dataclass(frozen=True)
class CheckedRecord:
    """A record that passed the port's checks, as the adapters receive it."""

    id: UUID
    tenant: str
    collection: str
    document_id: str
    vector: np.ndarray  # float32, finite, of the index's dimension
    payload: dict[str, Any]
    payload_json: str


@dataclass(frozen=True)
class VectorHit:
    id: UUID
    score: float
    collection: str
    document_id: str
    payload: dict[str, Any]


def engine_key(tenant: str, record_id: UUID) -> UUID:
    """The id a record has inside engines whose ids are global: unique per (tenant, id)."""
    return uuid.uuid5(_KEY_NAMESPACE, f"{tenant}\x00{record_id}")


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidVectorInput(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidVectorInput(f"{what} is longer than {MAX_NAME_LENGTH} characters")
    if "\x00" in value:
        raise InvalidVectorInput(f"{what} contains a NUL character")
    return value


def _check_names(what: str, values: Sequence[str]) -> list[str]:
    if isinstance(values, str):
        raise InvalidVectorInput(f"{what} must be a list of names, not the string {values!r}")
    checked = [_check_name(what, v) for v in values]
    if not checked:
        raise InvalidVectorInput(f"{what} must name at least one")
    return sorted(set(checked))


class VectorIndex(ABC):
    """One index in one engine. Public methods check their input, then call the adapter's
    `_`-methods with values that are known good: the adapters never see a NaN, a wrong
    dimension or an empty tenant, whatever their engine would have done with one."""

    def __init__(self, spec: IndexSpec) -> None:
        self.spec = spec

    # The port

    async def ensure(self) -> None:
        """Create the index if it does not exist; raise IndexMismatch if it exists differently."""
        await self._ensure()

    async def upsert(self, records: Sequence[VectorRecord]) -> UpsertResult:
        """Write the batch; a record with the same (tenant, id) is replaced, vector and all.

        A bad record (wrong dimension, NaN, no direction under cosine, a payload that is not
        JSON or too large, an id twice in the batch) is rejected alone, with its reason; the
        others are written. An empty batch is an error: it is always a caller's bug.
        """
        if not records:
            raise InvalidVectorInput("upsert needs at least one record; the batch is empty")
        good: list[CheckedRecord] = []
        positions: list[int] = []  # each good record's position in the batch
        rejected: list[Rejection] = []
        seen: dict[tuple[str, UUID], int] = {}
        for position, record in enumerate(records):
            try:
                checked = self._check_record(record)
                key = (checked.tenant, checked.id)
                if key in seen:
                    raise InvalidVectorInput(
                        f"id {checked.id} of tenant {checked.tenant!r} is already record "
                        f"{seen[key]} of this batch"
                    )
                seen[key] = position
            except InvalidVectorInput as exc:
                rejected.append(Rejection(position, getattr(record, "id", None), str(exc)))
                continue
            good.append(checked)
            positions.append(position)
        failed: dict[int, str] = {}
        if good:
            failed = await self._upsert(good)
        for position, checked in enumerate(good):
            if position in failed:
                rejected.append(Rejection(positions[position], checked.id, failed[position]))
        rejected.sort(key=lambda r: r.index)
        return UpsertResult(upserted=len(good) - len(failed), rejected=tuple(rejected))

    async def search(
        self,
        tenant: str,
        collections: Sequence[str],
        vector: Sequence[float],
        k: int,
        *,
        document_ids: Sequence[str] | None = None,
    ) -> list[VectorHit]:
        """The `k` records of `tenant` in `collections` nearest to `vector`, best first.

        `document_ids`, when given, narrows the search to those documents (inside the query).
        """
        tenant = _check_name("tenant", tenant)
        names = _check_names("collections", collections)
        documents = None if document_ids is None else _check_names("document_ids", document_ids)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise InvalidVectorInput(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
        query = self._check_vector(vector, "the query vector")
        hits = await self._search(tenant, names, query, k, documents)
        # Engines return equal scores in their own order; the port breaks ties by id everywhere.
        hits.sort(key=lambda h: (-h.score, str(h.id)))
        return hits

    async def delete(self, tenant: str, ids: Sequence[UUID]) -> None:
        """Delete these records of `tenant` (ids of other tenants are left alone)."""
        tenant = _check_name("tenant", tenant)
        keys = [self._check_id(i) for i in ids]
        if keys:
            await self._delete_ids(tenant, sorted(set(keys)))

    async def delete_documents(
        self, tenant: str, collection: str, document_ids: Sequence[str]
    ) -> None:
        """Delete every record of these documents of `tenant`'s `collection`."""
        tenant = _check_name("tenant", tenant)
        collection = _check_name("collection", collection)
        documents = _check_names("document_ids", document_ids)
        await self._delete_where(tenant, collection, documents)

    async def delete_collection(self, tenant: str, collection: str) -> None:
        """Delete every record of `tenant`'s `collection`."""
        tenant = _check_name("tenant", tenant)
        collection = _check_name("collection", collection)
        await self._delete_where(tenant, collection, None)

    async def count(
        self, tenant: str, collection: str | None = None, document_id: str | None = None
    ) -> int:
        """How many records `tenant` has (in `collection`, of `document_id`), counted exactly."""
        tenant = _check_name("tenant", tenant)
        if collection is not None:
            collection = _check_name("collection", collection)
        if document_id is not None:
            document_id = _check_name("document_id", document_id)
        return await self._count(tenant, collection, document_id)

    async def close(self) -> None:  # noqa: B027 - an adapter with nothing to close keeps this
        """Release the adapter's connections."""

    # What adapters implement

    @abstractmethod
    async def _ensure(self) -> None: ...

    @abstractmethod
    async def _upsert(self, records: list[CheckedRecord]) -> dict[int, str]:
        """Write checked records; a (tenant, id) already there is replaced. Returns the records
        the engine refused, by position in `records`, with its reason (where the engine can
        refuse one record alone; otherwise it raises and nothing is written)."""

    @abstractmethod
    async def _search(
        self,
        tenant: str,
        collections: list[str],
        vector: np.ndarray,
        k: int,
        document_ids: list[str] | None,
    ) -> list[VectorHit]: ...

    @abstractmethod
    async def _delete_ids(self, tenant: str, ids: list[UUID]) -> None: ...

    @abstractmethod
    async def _delete_where(
        self, tenant: str, collection: str, document_ids: list[str] | None
    ) -> None: ...

    @abstractmethod
    async def _count(self, tenant: str, collection: str | None, document_id: str | None) -> int: ...

    # Checks

    def _check_id(self, value: object) -> UUID:
        if isinstance(value, UUID):
            return value
        if isinstance(value, str):
            try:
                return UUID(value)
            except ValueError:
                pass
        raise InvalidVectorInput(f"id must be a UUID, got {value!r}")

    def _check_vector(self, vector: object, what: str) -> np.ndarray:
        try:
            array = np.asarray(vector, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidVectorInput(f"{what} is not a sequence of numbers") from None
        if array.ndim != 1:
            raise InvalidVectorInput(f"{what} must be one-dimensional, got shape {array.shape}")
        if array.shape[0] != self.spec.dimension:
            raise InvalidVectorInput(
                f"{what} has {array.shape[0]} dimensions; index {self.spec.name!r} "
                f"holds {self.spec.dimension}"
            )
        bad = np.flatnonzero(~np.isfinite(array))
        if bad.size:
            raise InvalidVectorInput(
                f"{what} has a non-finite value ({array[bad[0]]}) at position {int(bad[0])}"
            )
        as_float32 = array.astype(np.float32)
        if not np.isfinite(as_float32).all():
            raise InvalidVectorInput(f"{what} has a value beyond the float32 range")
        if self.spec.metric is Metric.COSINE and not np.any(as_float32):
            raise InvalidVectorInput(f"{what} is all zeros: it has no direction for cosine")
        return as_float32

    def _check_record(self, record: VectorRecord) -> CheckedRecord:
        if not isinstance(record, VectorRecord):
            raise InvalidVectorInput(f"expected a VectorRecord, got {type(record).__name__}")
        record_id = self._check_id(record.id)
        tenant = _check_name("tenant", record.tenant)
        collection = _check_name("collection", record.collection)
        document_id = _check_name("document_id", record.document_id)
        vector = self._check_vector(record.vector, f"the vector of record {record.id}")
        if not isinstance(record.payload, Mapping):
            raise InvalidVectorInput(f"the payload of record {record.id} is not a mapping")
        payload = dict(record.payload)
        try:
            payload_json = json.dumps(payload, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InvalidVectorInput(
                f"the payload of record {record.id} is not JSON: {exc}"
            ) from None
        size = len(payload_json.encode())
        if size > MAX_PAYLOAD_BYTES:
            raise InvalidVectorInput(
                f"the payload of record {record.id} is {size} bytes as JSON; "
                f"the limit is {MAX_PAYLOAD_BYTES}"
            )
        return CheckedRecord(
            record_id, tenant, collection, document_id, vector, payload, payload_json
        )


def brute_force_scores(metric: Metric, matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Exact scores of every row of `matrix` against `query`: the reference the adapters are
    tested against, and what a caller can use to re-rank a handful of vectors exactly."""
    matrix = np.asarray(matrix, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64)
    if metric is Metric.COSINE:
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
        return np.asarray((matrix @ query) / norms)
    if metric is Metric.DOT:
        return np.asarray(matrix @ query)
    return np.asarray(-np.linalg.norm(matrix - query, axis=1))

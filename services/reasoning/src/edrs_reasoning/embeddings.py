"""The sentence embedding model, with concurrent Embed calls micro-batched into one encode call."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from edrs_core import SettingsError

from edrs_reasoning import onnx_embeddings

log = logging.getLogger("edrs.reasoning.embeddings")

EmbeddingBackend = Literal["torch", "onnx", "onnx-int8", "mixed"]
# The mixed backend's switch: encode calls up to this many padded tokens go to ONNX Runtime.
# Measured (2 cores under load, one thread, all-MiniLM-L6-v2): ONNX took 7.9 ms for a query where
# torch took 13.7, 18.7 against 24.7 for 4 queries, 237 against 246 ms for 4 passages of 180 words
# (1,024 tokens); about even at 8 passages (476 against 505 ms wall, 452 against 420 ms CPU),
# torch clearly ahead at 16 (894 against 1,043 ms). docs/decisions/0015-onnx-embeddings.md.
MIXED_MAX_TOKENS = 1024
# ONNX Runtime's threads when EDRS_REASONING_EMBEDDING_THREADS is not set: two answered a query in
# 8 ms against one's 12 (p95 9 against 17) on this 2-core host, quiet or under a full test suite
# (docs/reasoning.md); torch keeps one, where a second cost more than it saved.
ONNX_THREADS = 2


class TextEncoder(Protocol):
    """One encode call: L2-normalised float32 rows, one per text, in order."""

    dimension: int

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray: ...


class TorchEncoder:
    """sentence-transformers on torch: the reference pipeline, and the one for GPUs."""

    def __init__(self, model: Any) -> None:
        self.model = model
        # sentence-transformers 6 renamed the method; older releases only have the long name.
        dimension = getattr(model, "get_embedding_dimension", None) or (
            model.get_sentence_embedding_dimension
        )
        self.dimension: int = dimension()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        matrix: np.ndarray = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return matrix.astype(np.float32, copy=False)


class MixedEncoder:
    """ONNX Runtime for small encode calls (a query, a few passages), torch for large batches:
    each is the faster one there, and both give the same vectors (cosine 1.0 measured), so an
    index built by one serves the other's queries."""

    def __init__(
        self,
        small: onnx_embeddings.OnnxEncoder,
        large: TorchEncoder,
        max_tokens: int = MIXED_MAX_TOKENS,
    ) -> None:
        if small.dimension != large.dimension:
            raise ValueError(f"dimensions differ: {small.dimension} and {large.dimension}")
        self.small, self.large, self.max_tokens = small, large, max_tokens
        self.dimension = small.dimension
        # Encode calls per engine, for tests and for a reader checking where the time goes.
        self.calls = {"onnx": 0, "torch": 0}

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.small.padded_tokens(texts) <= self.max_tokens:
            self.calls["onnx"] += 1
            return self.small.encode(texts, batch_size)
        self.calls["torch"] += 1
        return self.large.encode(texts, batch_size)


@dataclass
class _Pending:
    texts: tuple[str, ...]
    future: asyncio.Future[list[list[float]]]
    # Calls waiting for this result: identical calls in flight share one entry.
    waiters: int = 0


class Embedder:
    """Encodes texts into L2-normalised vectors.

    Calls that arrive within `window_seconds` of each other, or while an encode is running, share
    the next encode call (up to `batch_size` texts, a single call's texts never split): the model
    runs one batch of 32 short texts in about the time of a few single ones on CPU.

    A call whose texts equal those of a call still waiting or being encoded gets that call's
    vectors instead of encoding them again: a conversation turn embeds the user's message for
    memory's recall and for the knowledge search at the same moment. Nothing is kept after a call
    is answered (no cache of texts or vectors)."""

    def __init__(
        self,
        encoder: TextEncoder,
        name: str,
        dimensions: int,
        batch_size: int,
        window_seconds: float,
        backend: EmbeddingBackend = "torch",
    ) -> None:
        self.encoder = encoder
        self.backend = backend
        self.name = name
        self.dimensions = dimensions
        self.batch_size = batch_size
        self.window_seconds = window_seconds
        self._pending: list[_Pending] = []
        # Every call not answered yet (waiting or being encoded), by its texts.
        self._inflight: dict[tuple[str, ...], _Pending] = {}
        self._pending_texts = 0
        self._full = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        # torch and ONNX Runtime release the GIL while encoding; one encode at a time keeps the
        # model's threads for it.
        self._encode_lock = threading.Lock()

    @classmethod
    async def load(
        cls,
        path: Path,
        *,
        name: str,
        dimensions: int,
        device: str,
        precision: str,
        batch_size: int,
        window_seconds: float,
        threads: int | None = None,
        backend: EmbeddingBackend = "torch",
        cache_dir: Path | None = None,
    ) -> Embedder:
        """Load the model in a worker thread (imports, weights and a first export take seconds).
        The onnx backends need `cache_dir` for the exported model. `threads` per engine unless
        given: torch 1, ONNX Runtime `ONNX_THREADS` (fewer on a smaller host)."""
        encoder: TextEncoder
        torch_threads = threads or 1
        onnx_threads = threads or min(ONNX_THREADS, os.cpu_count() or 1)
        if backend == "torch":
            encoder = await asyncio.to_thread(
                load_torch_encoder, path, device, precision, torch_threads
            )
        else:
            if cache_dir is None:
                raise ValueError(f"the {backend} embedding backend needs a cache directory")
            onnx = await asyncio.to_thread(
                onnx_embeddings.load,
                path,
                cache_dir,
                quantised=backend == "onnx-int8",
                threads=onnx_threads,
            )
            encoder = onnx
            if backend == "mixed":
                torch = await asyncio.to_thread(
                    load_torch_encoder, path, device, precision, torch_threads
                )
                encoder = MixedEncoder(onnx, torch)
        if encoder.dimension != dimensions:
            raise SettingsError(
                f"EDRS_REASONING_EMBEDDING_DIMENSIONS is {dimensions} but the model at {path} "
                f"produces {encoder.dimension}-dimensional vectors"
            )
        return cls(encoder, name, dimensions, batch_size, window_seconds, backend)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order. Identical calls in flight get the same lists: read
        them, do not change them."""
        key = tuple(texts)
        entry = self._inflight.get(key)
        if entry is None:
            entry = _Pending(key, asyncio.get_running_loop().create_future())
            self._inflight[key] = entry
            entry.future.add_done_callback(lambda _: self._forget(entry))
            self._pending.append(entry)
            self._pending_texts += len(key)
            if self._pending_texts >= self.batch_size:
                self._full.set()
            if self._worker is None or self._worker.done():
                self._worker = asyncio.create_task(self._drain(), name="embedding-batcher")
        entry.waiters += 1
        try:
            # Shielded: one caller giving up must not cancel the others' answer.
            return await asyncio.shield(entry.future)
        except asyncio.CancelledError:
            entry.waiters -= 1
            if entry.waiters == 0:
                # Nobody waits for it any more: a batch not yet taken leaves it out.
                entry.future.cancel()
            raise

    def _forget(self, entry: _Pending) -> None:
        if self._inflight.get(entry.texts) is entry:
            del self._inflight[entry.texts]

    async def _drain(self) -> None:
        while self._pending:
            if not self._full.is_set() and self.window_seconds > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.window_seconds)
            batch = self._take_batch()
            texts = [t for p in batch for t in p.texts]
            try:
                vectors = await asyncio.to_thread(self._encode, texts)
            except Exception as exc:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            start = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(vectors[start : start + len(p.texts)])
                start += len(p.texts)

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        count = 0
        while self._pending and (
            not batch or count + len(self._pending[0].texts) <= self.batch_size
        ):
            item = self._pending.pop(0)
            if item.future.cancelled():
                self._pending_texts -= len(item.texts)
                continue
            batch.append(item)
            count += len(item.texts)
        self._pending_texts -= count
        if self._pending_texts < self.batch_size:
            self._full.clear()
        return batch

    def _encode(self, texts: list[str]) -> list[list[float]]:
        with self._encode_lock:
            matrix = self.encoder.encode(texts, self.batch_size)
        return [row.tolist() for row in matrix]


def load_torch_encoder(path: Path, device: str, precision: str, threads: int) -> TorchEncoder:
    onnx_embeddings.offline_hub()
    import torch
    from sentence_transformers import SentenceTransformer

    # Process-wide, but only torch reads it: llama.cpp runs its own threads.
    torch.set_num_threads(threads)
    from transformers.utils import logging as transformers_logging

    # A tqdm bar per load, outside the JSON logs. transformers leaves this function unannotated.
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    model = SentenceTransformer(str(path), device="cuda" if device == "gpu" else "cpu")
    if precision == "float16":
        model = model.half()
    log.info(
        "embedding model loaded", extra={"path": str(path), "device": device, "backend": "torch"}
    )
    return TorchEncoder(model)

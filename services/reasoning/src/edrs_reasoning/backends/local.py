"""The local backend: a GGUF chat model run by llama.cpp (llama-cpp-python) on this host."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from edrs_reasoning.backends.base import GenerationOptions, Message, Usage

log = logging.getLogger("edrs.reasoning.local")

_DONE = object()


class LocalBackend:
    """One llama context per generation slot: a context is not thread-safe, so concurrent
    generations each take one from the pool and give it back when their thread has stopped."""

    kind = "local"

    def __init__(self, instances: list[Any], model: str, context_window: int) -> None:
        self.model = model
        self.context_window = context_window
        self._pool: asyncio.Queue[Any] = asyncio.Queue()
        for llm in instances:
            self._pool.put_nowait(llm)
        first = instances[0]
        self._tokenizer = first
        self._format = _chat_formatter(first)

    @classmethod
    async def load(
        cls, path: Path, *, context_window: int, threads: int, device: str, instances: int
    ) -> LocalBackend:
        """Load `instances` contexts in a worker thread (the event loop keeps serving)."""
        loaded = [
            await asyncio.to_thread(_load_llama, path, context_window, threads, device)
            for _ in range(instances)
        ]
        return cls(loaded, path.name.removesuffix(".gguf"), context_window)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._prompt_tokens(messages))

    def _prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        # The same rendering create_chat_completion does with the GGUF's own chat template.
        rendered = self._format(messages=[{"role": m.role, "content": m.content} for m in messages])
        tokens: list[int] = self._tokenizer.tokenize(
            rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
        )
        return tokens

    async def stream(
        self, messages: Sequence[Message], options: GenerationOptions, usage: Usage
    ) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        llm = await self._pool.get()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()
        payload = [{"role": m.role, "content": m.content} for m in messages]

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                # A JSON Schema becomes a llama.cpp grammar (llama-cpp-python converts it):
                # every sampled token keeps the text a prefix of a document the schema accepts.
                response_format = (
                    {"type": "json_object", "schema": options.json_schema}
                    if options.json_schema is not None
                    else None
                )
                chunks = llm.create_chat_completion(
                    messages=payload,
                    response_format=response_format,
                    max_tokens=options.max_tokens,
                    temperature=options.temperature,
                    top_p=options.top_p,
                    stop=list(options.stop) or None,
                    seed=options.seed,
                    stream=True,
                )
                finish = ""
                for chunk in chunks:
                    if cancel.is_set():
                        finish = "cancelled"
                        break
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if text:
                        emit(text)
                    finish = choice.get("finish_reason") or finish
                chunks.close()
                emit((_DONE, finish))
            except BaseException as exc:
                emit(exc)
            finally:
                # Back to the pool only once the thread no longer touches the context.
                loop.call_soon_threadsafe(self._pool.put_nowait, llm)

        thread = threading.Thread(target=run, name="llama-generation", daemon=True)
        thread.start()
        parts: list[str] = []
        try:
            while True:
                item = await queue.get()
                if isinstance(item, tuple) and item and item[0] is _DONE:
                    usage.finish_reason = item[1]
                    break
                if isinstance(item, BaseException):
                    raise item
                parts.append(item)
                yield item
        finally:
            cancel.set()
            text = "".join(parts)
            usage.completion_tokens = (
                len(self._tokenizer.tokenize(text.encode("utf-8"), add_bos=False, special=False))
                if text
                else 0
            )

    async def close(self) -> None:
        while not self._pool.empty():
            llm = self._pool.get_nowait()
            await asyncio.to_thread(llm.close)


def _load_llama(path: Path, context_window: int, threads: int, device: str) -> Any:
    from llama_cpp import Llama

    return Llama(
        model_path=str(path),
        n_ctx=context_window,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=-1 if device == "gpu" else 0,
        verbose=False,
    )


def _chat_formatter(llm: Any) -> Any:
    from llama_cpp import llama_chat_format

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise RuntimeError("the GGUF file carries no chat template (tokenizer.chat_template)")

    def text(token_id: int) -> str:
        return str(llm._model.token_get_text(token_id)) if token_id != -1 else ""

    return llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=text(llm.token_eos()),
        bos_token=text(llm.token_bos()),
    )

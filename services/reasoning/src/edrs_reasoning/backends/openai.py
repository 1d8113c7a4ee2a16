"""The OpenAI-compatible backend: any server speaking `POST /chat/completions` with SSE streaming
(vLLM, Ollama, llama.cpp's server, OpenAI itself)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
from edrs_core import Unavailable

from edrs_reasoning.backends.base import GenerationOptions, Message, Usage

# Without the server's tokenizer, prompt size is estimated for the context-window check: about
# four characters a token for English, plus the chat template's few tokens per message. The
# usage the server reports replaces the estimate once a generation ends.
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


class OpenAIBackend:
    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None,
        timeout_seconds: float,
        context_window: int,
        json_schema_format: str = "json_schema",
    ) -> None:
        self.model = model
        self.json_schema_format = json_schema_format
        self.context_window = context_window
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_seconds
        )

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return sum(estimate_tokens(m.content) + _TOKENS_PER_MESSAGE for m in messages)

    async def stream(
        self, messages: Sequence[Message], options: GenerationOptions, usage: Usage
    ) -> AsyncGenerator[str, None]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
        }
        if options.stop:
            body["stop"] = list(options.stop)
        if options.seed is not None:
            body["seed"] = options.seed
        if options.json_schema is not None:
            # Structured outputs: the server constrains decoding to the schema. OpenAI and vLLM
            # take it as `json_schema`; llama-cpp-python's server as `json_object` + `schema`.
            if self.json_schema_format == "json_object":
                body["response_format"] = {"type": "json_object", "schema": options.json_schema}
            else:
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "answer",
                        "schema": options.json_schema,
                        "strict": True,
                    },
                }
        parts: list[str] = []
        reported = False
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode("utf-8", "replace")[:300]
                    raise Unavailable(f"the model server answered {response.status_code}: {detail}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments (": ping"), event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        usage.prompt_tokens = int(chunk["usage"].get("prompt_tokens") or 0)
                        usage.completion_tokens = int(chunk["usage"].get("completion_tokens") or 0)
                        reported = True
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            parts.append(text)
                            yield text
                        if choice.get("finish_reason"):
                            usage.finish_reason = choice["finish_reason"]
        except httpx.HTTPError as exc:
            raise Unavailable(f"the model server cannot be reached: {exc!r}") from exc
        finally:
            if not reported:
                # prompt_tokens stays 0: the caller already counted them (Usage's contract).
                usage.completion_tokens = estimate_tokens("".join(parts))

    async def close(self) -> None:
        await self._client.aclose()

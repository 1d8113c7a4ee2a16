"""Voice benchmark: speech-to-text and text-to-speech real-time factors, and the reasoning
service's memory with both speech models loaded.

Run `python benchmarks/bench_voice.py`. It starts embedded PostgreSQL and NATS and the reasoning
service as a process (the local models: Whisper tiny.en through faster-whisper, Piper's joe
voice), then measures over gRPC, as the gateway calls it:

- TTS: `Synthesize` of a text that speaks for about 3 s and one for about 30 s; the real-time
  factor is synthesis time over audio length (below 1: faster than speech), and the time to the
  first audio chunk (what a listener waits for).
- STT: `Transcribe` of 3 s and 30 s of that speech (WAV); real-time factor is transcription time
  over audio length. Whisper always reads a 30-second window, so short clips cost relatively more.
- a voice turn: a recorded question sent to the gateway's `.../voice-messages` (the memory,
  persona and gateway services run too), timed from the end of speech (the recording sent) to the
  first audio of the reply, split into transcription (until the `transcript` event: upload,
  Transcribe, DLP, the turn accepted), generation to the first sentence (until the `delta` that
  completes the reply's first sentence) and its synthesis (until the first `audio` event); the
  median of `--turns` turns after a warm-up one.
- memory: the reasoning service's resident memory once started (chat, embedding and both speech
  models loaded) and its peak during the run (the voice turns included).

It prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
from _harness import (
    API,
    POSTGRES_SETTINGS,
    Service,
    dev_admin_headers,
    memory_service,
    peak_rss,
    persona_and_gateway,
    service,
)
from edrs_core.engines.nats import EmbeddedNats
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_core.engines.redis import EmbeddedRedis
from edrs_core.sentences import SentenceBuffer
from edrs_core.testing import channel_with, tenant_metadata
from edrs_core.wav import wav
from edrs_proto.reasoning.v1 import reasoning_pb2, reasoning_pb2_grpc

SENTENCES = [
    "The quarterly report is ready for review.",
    "Please send the updated figures to the finance team.",
    "Our next meeting is on Thursday afternoon.",
    "The new office opens early next spring.",
    "Remember to back up your files every evening.",
    "She has led the project for seven years.",
    "The train to the airport leaves every twenty minutes.",
    "We expect the results by the end of the week.",
]


def text_for(seconds: float) -> str:
    """Sentences enough for at least `seconds` of speech (2 to 3 s a sentence with this voice)."""
    count = math.ceil(seconds / 2.0)
    return " ".join(SENTENCES[i % len(SENTENCES)] for i in range(count))


async def synthesize(
    stub: reasoning_pb2_grpc.ReasoningServiceStub, text: str
) -> tuple[bytes, int, float, float]:
    """(PCM, sample rate, seconds to the first audio, seconds in all)."""
    start = time.perf_counter()
    first = 0.0
    rate = 0
    parts: list[bytes] = []
    async for response in stub.Synthesize(
        reasoning_pb2.SynthesizeRequest(text=text, format=reasoning_pb2.AUDIO_FORMAT_PCM)
    ):
        if response.HasField("info"):
            rate = response.info.sample_rate
        elif response.audio.data:
            if not first:
                first = time.perf_counter() - start
            parts.append(response.audio.data)
    return b"".join(parts), rate, first, time.perf_counter() - start


def upload(data: bytes) -> Iterator[reasoning_pb2.TranscribeRequest]:
    yield reasoning_pb2.TranscribeRequest(config=reasoning_pb2.TranscribeConfig(language="en"))
    for i in range(0, len(data), 64 * 1024):
        yield reasoning_pb2.TranscribeRequest(audio=data[i : i + 64 * 1024])


async def measure(reasoning: Service, repeats: int) -> None:
    # Every call carries a caller's identity: a token of the test issuer the harness's services trust.
    identity = tenant_metadata("bench-voice")
    async with channel_with(reasoning.grpc_address, identity) as channel:
        stub = reasoning_pb2_grpc.ReasoningServiceStub(channel)
        info = await stub.GetModelInfo(reasoning_pb2.GetModelInfoRequest())
        print(f"models: {info.transcription_model} (STT), {info.speech_model} (TTS)")
        await synthesize(stub, "Warming up.")  # the first call initialises ONNX Runtime's session
        clips: dict[float, bytes] = {}
        print("\nTTS (Synthesize, PCM)      audio s   RTF p50   first audio ms p50")
        for target in (3.0, 30.0):
            text = text_for(target)
            rtfs, firsts = [], []
            for _ in range(repeats if target < 10 else max(1, repeats // 2)):
                pcm, rate, first, total = await synthesize(stub, text)
                seconds = len(pcm) / 2 / rate
                rtfs.append(total / seconds)
                firsts.append(first * 1000)
            # The clip for STT: exactly `target` seconds of this speech.
            clips[target] = wav(pcm[: int(target * rate) * 2], rate)
            print(
                f"  ~{target:>4.0f} s of speech        {seconds:7.1f}   {statistics.median(rtfs):7.3f}"
                f"   {statistics.median(firsts):10.0f}"
            )
        await stub.Transcribe(upload(clips[3.0]))  # warm-up
        print("\nSTT (Transcribe, WAV)      audio s   RTF p50   ms p50")
        for target, data in clips.items():
            times = []
            for _ in range(repeats if target < 10 else max(1, repeats // 2)):
                start = time.perf_counter()
                result = await stub.Transcribe(upload(data))
                times.append(time.perf_counter() - start)
            print(
                f"  {target:>4.0f} s clip               {result.duration_seconds:7.1f}"
                f"   {statistics.median(times) / target:7.3f}   {statistics.median(times) * 1000:6.0f}"
            )


QUESTION = "Tell me about the ocean."
PERSONA = {
    "name": "Vera",
    "role": "librarian",
    "instructions": "Answer in three or four short sentences.",
}


async def voice_turn(
    http: httpx.AsyncClient, headers: dict[str, str], persona_id: str, recording: bytes
) -> dict[str, float]:
    """One turn by voice; seconds from the end of speech (the recording sent) to each step."""
    conversation = f"bench-{time.monotonic_ns()}"
    buffer = SentenceBuffer()
    marks: dict[str, float] = {}
    event = ""
    start = time.perf_counter()
    async with http.stream(
        "POST",
        f"{API}/personas/{persona_id}/conversations/{conversation}/voice-messages",
        files={"file": ("question.wav", recording, "audio/wav")},
        data={"maxTokens": "60", "responseFormat": "wav"},
        headers={**headers, "Accept": "text/event-stream"},
    ) as reply:
        if reply.status_code != 200:
            await reply.aread()
            raise SystemExit(f"voice turn failed: {reply.status_code} {reply.text}")
        async for line in reply.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                now = time.perf_counter() - start
                if event == "transcript":
                    marks.setdefault("transcript", now)
                elif event == "delta":
                    marks["last_delta"] = now
                    if "sentence" not in marks and buffer.push(json.loads(line[5:])["text"]):
                        marks["sentence"] = now
                elif event == "audio":
                    marks.setdefault("audio", now)
                elif event == "error":
                    raise SystemExit(f"voice turn failed: {line}")
    # A reply of one sentence completes it only when the reply ends (the last delta).
    marks.setdefault("sentence", marks["last_delta"])
    return marks


async def measure_voice_turns(gateway: Service, reasoning: Service, turns: int) -> None:
    headers = await dev_admin_headers(gateway)
    async with channel_with(reasoning.grpc_address, tenant_metadata("bench-voice")) as channel:
        pcm, rate, _, _ = await synthesize(
            reasoning_pb2_grpc.ReasoningServiceStub(channel), QUESTION
        )
    recording = wav(pcm, rate)
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=300) as http:
        created = await http.post(f"{API}/personas", json=PERSONA, headers=headers)
        persona_id = created.json()["id"]
        await voice_turn(http, headers, persona_id, recording)  # warm-up
        runs = [await voice_turn(http, headers, persona_id, recording) for _ in range(turns)]

    def median_ms(values: list[float]) -> float:
        return statistics.median(values) * 1000

    transcription = median_ms([r["transcript"] for r in runs])
    generation = median_ms([r["sentence"] - r["transcript"] for r in runs])
    synthesis = median_ms([r["audio"] - r["sentence"] for r in runs])
    total = median_ms([r["audio"] for r in runs])
    print(
        f"\nvoice turn (.../voice-messages, {len(pcm) / 2 / rate:.1f} s question, "
        f"median of {turns})      ms p50"
    )
    print(f"  end of speech to first reply audio        {total:6.0f}")
    print(f"    transcription (to the transcript)       {transcription:6.0f}")
    print(f"    generation to the first sentence        {generation:6.0f}")
    print(f"    synthesis of the first sentence         {synthesis:6.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="measured calls per short case")
    parser.add_argument("--turns", type=int, default=5, help="measured voice turns")
    args = parser.parse_args()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-voice-")))
        postgres = stack.enter_context(
            EmbeddedPostgres(root / "postgres", settings=POSTGRES_SETTINGS)
        )
        nats = stack.enter_context(EmbeddedNats(root / "nats"))
        reasoning = stack.enter_context(
            service(
                "reasoning",
                {"BUS_URL": nats.url(), "DATABASE_URL": postgres.url("bench_reasoning")},
                root,
                start_within=300,
            )
        )
        started = psutil.Process(reasoning.process.pid).memory_info().rss / 2**20
        redis = stack.enter_context(EmbeddedRedis(root / "redis"))
        memory = memory_service(stack, root, nats.url(), postgres, redis, reasoning)
        _, gateway = persona_and_gateway(
            stack, root, nats.url(), postgres, redis, reasoning, memory
        )
        with peak_rss({"reasoning": reasoning.process.pid}) as peak:
            asyncio.run(measure(reasoning, args.repeats))
            asyncio.run(measure_voice_turns(gateway, reasoning, args.turns))
        print(
            f"\nreasoning service memory: {started:.0f} MiB started (chat, embedding, STT and TTS "
            f"models loaded), {peak['reasoning']:.0f} MiB peak"
        )


if __name__ == "__main__":
    main()

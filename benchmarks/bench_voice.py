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
- memory: the service's resident memory once started (chat, embedding and both speech models
  loaded) and its peak during the run.

It prints figures and asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
from _harness import POSTGRES_SETTINGS, Service, peak_rss, service
from edrs_core.engines.nats import EmbeddedNats
from edrs_core.engines.postgres import EmbeddedPostgres
from edrs_core.testing import channel_with, tenant_metadata
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


def wav(pcm: bytes, rate: int) -> bytes:
    size = len(pcm)
    return (
        b"RIFF"
        + (36 + size).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + rate.to_bytes(4, "little")
        + (rate * 2).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + size.to_bytes(4, "little")
        + pcm
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="measured calls per short case")
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
        with peak_rss({"reasoning": reasoning.process.pid}) as peak:
            asyncio.run(measure(reasoning, args.repeats))
        print(
            f"\nreasoning service memory: {started:.0f} MiB started (chat, embedding, STT and TTS "
            f"models loaded), {peak['reasoning']:.0f} MiB peak"
        )


if __name__ == "__main__":
    main()

"""`/api/v1/audio` through the running gateway to a reasoning service with the real speech models:
OpenAI-shaped transcriptions of every accepted container, streamed speech, every bad-audio case
refused naming its problem, and the routes' permissions and per-tenant rate limits."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator

import av
import httpx
import numpy as np
import pytest
from edrs_core.testing import RunningService, engine_settings, running_service
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.auth.principal import Principal
from edrs_gateway.config import RateLimitTier
from edrs_gateway.context import GatewayContext
from edrs_gateway.store import NewTenant
from edrs_reasoning.app import definition as reasoning_definition

pytestmark = pytest.mark.integration

KEY_SECRET = "test-key-encryption-secret-0123456789abcdef"
# One token a minute: no request of a test is admitted by a refill, however slow the machine.
PROFESSIONAL = RateLimitTier(per_minute=1, burst=3, concurrency=1)
MAX_AUDIO_SECONDS = 8
PHRASE = "Please call me back tomorrow afternoon."


@pytest.fixture(scope="module")
async def gateway(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[RunningService]:
    def engines(service: str, redis_db: int) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_gateway_audio_{service}",
            redis_db=redis_db,
        )

    async with (
        running_service(
            reasoning_definition,
            start_timeout=240,
            max_audio_seconds=MAX_AUDIO_SECONDS,
            **engines("reasoning", 13),
        ) as reasoning,
        running_service(
            gateway_definition,
            peers={"reasoning": reasoning.grpc_address},
            key_encryption_secret=KEY_SECRET,
            rate_limits_enabled=True,
            rate_limit_overrides={"professional": PROFESSIONAL.model_dump(by_alias=True)},
            **engines("gateway", 15),
        ) as gateway,
    ):
        yield gateway


@pytest.fixture
def ctx(gateway: RunningService) -> GatewayContext:
    rt = gateway.runner.runtime
    assert rt is not None
    return GatewayContext.build(rt.settings, rt)


async def bearer(
    ctx: GatewayContext, tier: str = "enterprise", role: str = "member"
) -> dict[str, str]:
    tenant = await ctx.tenants.create(NewTenant(name=f"A {uuid.uuid4().hex[:10]}", tier=tier))  # type: ignore[arg-type]
    token = await ctx.tokens.issue(
        Principal(
            tenant_id=str(tenant.id),
            tier=tenant.tier,
            subject_id=str(uuid.uuid4()),
            subject_kind="user",
            role=role,  # type: ignore[arg-type]
        )
    )
    return {"Authorization": f"Bearer {token.token}"}


@pytest.fixture
async def client(gateway: RunningService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=120) as c:
        yield c


async def speak(
    client: httpx.AsyncClient, headers: dict[str, str], fmt: str, text: str = PHRASE
) -> bytes:
    reply = await client.post(
        "/api/v1/audio/speech", json={"input": text, "response_format": fmt}, headers=headers
    )
    assert reply.status_code == 200, reply.text
    return reply.content


def webm(wav: bytes) -> bytes:
    """The WAV re-encoded as WebM/Opus, what a browser's MediaRecorder uploads."""
    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(out, mode="w", format="webm") as target:
        stream = target.add_stream("libopus", rate=48_000, layout="mono")
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=48_000)
        for frame in source.decode(audio=0):
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    target.mux(packet)
        for resampled in resampler.resample(None):
            for packet in stream.encode(resampled):
                target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return out.getvalue()


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalpha() or c.isspace()).split()


async def transcribe(
    client: httpx.AsyncClient, headers: dict[str, str], data: bytes, name: str, **form: object
) -> httpx.Response:
    return await client.post(
        "/api/v1/audio/transcriptions",
        files={"file": (name, data, "application/octet-stream")},
        data=form,  # type: ignore[arg-type]
        headers=headers,
    )


async def test_every_accepted_container_is_transcribed(client, ctx) -> None:
    headers = await bearer(ctx)
    wav = await speak(client, headers, "wav")
    uploads = {
        "speech.wav": wav,
        "speech.mp3": await speak(client, headers, "mp3"),
        "speech.ogg": await speak(client, headers, "opus"),
        "speech.webm": webm(wav),
    }
    for name, data in uploads.items():
        reply = await transcribe(client, headers, data, name)
        assert reply.status_code == 200, (name, reply.text)
        body = reply.json()
        assert words(body["text"]) == words(PHRASE), name
        assert body["language"] == "en"
        assert 1.5 < body["duration"] < MAX_AUDIO_SECONDS
        assert "words" not in body and "segments" not in body


async def test_verbose_json_has_segments_and_word_timestamps_and_text_is_plain(client, ctx) -> None:
    headers = await bearer(ctx)
    wav = await speak(client, headers, "wav")
    reply = await transcribe(
        client,
        headers,
        wav,
        "speech.wav",
        response_format="verbose_json",
        language="en",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["task"] == "transcribe"
    assert [words(w["word"])[0] for w in body["words"]] == words(PHRASE)
    assert all(w["start"] <= w["end"] <= body["duration"] + 0.05 for w in body["words"])
    assert body["segments"][0]["text"]
    plain = await transcribe(client, headers, wav, "speech.wav", response_format="text")
    assert plain.headers["content-type"].startswith("text/plain")
    assert words(plain.text) == words(PHRASE)


async def test_speech_streams_in_the_format_asked(client, ctx) -> None:
    headers = await bearer(ctx)
    async with client.stream(
        "POST",
        "/api/v1/audio/speech",
        json={
            "input": "One sentence here. And another there.",
            "responseFormat": "wav",
            "speed": 1.2,
        },
        headers=headers,
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "audio/wav"
        assert reply.headers["x-sample-rate"] == "22050"
        assert reply.headers["x-voice"] == "en_US-joe-medium"
        pieces = [piece async for piece in reply.aiter_raw()]
    data = b"".join(pieces)
    assert data[:4] == b"RIFF"
    with av.open(io.BytesIO(data)) as container:
        seconds = sum(f.samples for f in container.decode(audio=0)) / 22_050
    assert seconds > 1.5


async def test_bad_audio_is_refused_naming_the_problem(client, ctx) -> None:
    headers = await bearer(ctx)
    silence = np.zeros(int((MAX_AUDIO_SECONDS + 2) * 8_000), dtype="<i2").tobytes()
    long_wav = (
        b"RIFF"
        + (36 + len(silence)).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")
        + (1).to_bytes(2, "little")
        + (8_000).to_bytes(4, "little")
        + (16_000).to_bytes(4, "little")
        + (2).to_bytes(2, "little")
        + (16).to_bytes(2, "little")
        + b"data"
        + len(silence).to_bytes(4, "little")
        + silence
    )
    unknown_codec = long_wav[:20] + (0x4242).to_bytes(2, "little") + long_wav[22:2000]
    cases = {
        "empty": (b"", "audio is empty"),
        "not audio": (b"just some notes, not a recording\n" * 40, "audio is not an audio file"),
        "codec": (unknown_codec, "audio uses a codec that cannot be decoded"),
        "too long": (long_wav, f"audio is too long: more than {MAX_AUDIO_SECONDS} seconds"),
    }
    for case, (data, detail) in cases.items():
        reply = await transcribe(client, headers, data, "upload.bin")
        assert reply.status_code == 422, (case, reply.text)
        assert reply.headers["content-type"] == "application/problem+json"
        assert detail in reply.json()["detail"], case
    missing = await client.post(
        "/api/v1/audio/transcriptions", data={"language": "en"}, headers=headers
    )
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["pointer"] == "/file"


async def test_an_upload_over_the_limit_is_refused_before_it_is_read(gateway, ctx, api_of) -> None:
    headers = await bearer(ctx)
    async with api_of(gateway, audio_max_upload_bytes=10_000) as small:
        reply = await transcribe(small, headers, b"\0" * 20_000, "big.wav")
    assert reply.status_code == 413
    assert "larger than 10000 bytes" in reply.json()["detail"]


async def test_bad_speech_requests_are_refused(client, ctx) -> None:
    headers = await bearer(ctx)
    cases = [
        ({"input": "Hi.", "voice": "alloy"}, 422, "voice 'alloy' is not available"),
        ({"input": "Hi.", "response_format": "aac"}, 422, "/responseFormat"),
        ({"input": ""}, 422, "/input"),
        ({"input": "Hi.", "speed": 5}, 422, "/speed"),
    ]
    for body, status, detail in cases:
        reply = await client.post("/api/v1/audio/speech", json=body, headers=headers)
        assert reply.status_code == status, (body, reply.text)
        assert detail in reply.text, body


async def test_the_routes_need_a_caller_who_may_converse(client, ctx) -> None:
    anonymous = await client.post("/api/v1/audio/speech", json={"input": "Hi."})
    assert anonymous.status_code == 401
    viewer = await bearer(ctx, role="viewer")
    refused = await client.post("/api/v1/audio/speech", json={"input": "Hi."}, headers=viewer)
    assert refused.status_code == 403
    refused = await transcribe(client, viewer, b"RIFF", "a.wav")
    assert refused.status_code == 403


async def test_rate_limits_apply_per_tenant(client, ctx) -> None:
    limited = await bearer(ctx, tier="professional")
    other = await bearer(ctx, tier="professional")
    replies = [
        await client.post("/api/v1/audio/speech", json={"input": "Hi."}, headers=limited)
        for _ in range(PROFESSIONAL.burst + 1)
    ]
    assert [r.status_code for r in replies] == [200] * PROFESSIONAL.burst + [429]
    assert replies[-1].json()["code"] == "rate_limited"
    refused = await transcribe(client, limited, b"RIFF", "a.wav")
    assert refused.status_code == 429
    # Another tenant of the same tier has its own bucket.
    served = await client.post("/api/v1/audio/speech", json={"input": "Hi."}, headers=other)
    assert served.status_code == 200

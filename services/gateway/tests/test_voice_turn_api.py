"""A turn by voice through the running gateway and the fleet behind it, with the real models:
a recording in (multipart to `.../voice-messages` or `.../messages`, or binary frames of the
WebSocket), its transcript through DLP, stored as the message and read by the model, the reply
back as text deltas and per-sentence audio in the persona's voice, the first audio before the text
is finished; bad audio refused with its reason on every route; tenants isolated and rate-limited.

The models load once for the module (one fleet); every test shares it."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import av
import httpx
import numpy as np
import pytest
from edrs_core.wav import wav
from edrs_gateway.auth.tokens import TokenService
from edrs_reasoning.model_files import speech_voice_path
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.integration

# The longest recording the module's reasoning service takes: a short limit, so that "too long"
# is a small upload.
MAX_AUDIO_SECONDS = 12
REASONING_SETTINGS = {"max_audio_seconds": MAX_AUDIO_SECONDS}  # read by conversation_fleet
VOICE = "en_US-joe-medium"

PERSONA = {
    "name": "Vera",
    "role": "guide",
    "responsibilities": ["answer questions"],
    "skills": ["talking"],
    "tone": "warm",
    "instructions": "Answer in three or four short sentences.",
}
QUESTION = "Tell me about the ocean."


@pytest.fixture(scope="module")
async def member(conversation_fleet) -> dict[str, str]:
    return await conversation_fleet.login(await conversation_fleet.new_tenant(), "member")


@pytest.fixture
async def client(conversation_fleet) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=conversation_fleet.url, timeout=300) as http:
        yield http


def sse_events(lines: list[str]) -> list[tuple[str, dict[str, Any]]]:
    events, event, data = [], "message", []
    for line in lines:
        if line == "":
            if data:
                events.append((event, json.loads("\n".join(data))))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    return events


def words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalpha() or c.isspace()).split()


async def recording(
    client: httpx.AsyncClient, headers: dict[str, str], text: str, fmt: str = "mp3", **body: Any
) -> bytes:
    reply = await client.post(
        "/api/v1/audio/speech",
        json={"input": text, "responseFormat": fmt, **body},
        headers=headers,
    )
    assert reply.status_code == 200, reply.text
    return reply.content


async def new_persona(client: httpx.AsyncClient, headers: dict[str, str], **fields: Any) -> str:
    created = await client.post("/api/v1/personas", headers=headers, json={**PERSONA, **fields})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def talk(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    persona_id: str,
    audio: bytes,
    route: str = "voice-messages",
    **form: str,
) -> tuple[int, list[tuple[str, dict[str, Any]]], str]:
    """(status, SSE events, conversation id) of a voice turn; the problem's body for a refusal."""
    conversation = f"voice-{uuid.uuid4().hex[:8]}"
    async with client.stream(
        "POST",
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/{route}",
        files={"file": ("question.mp3", audio, "audio/mpeg")},
        data=form,
        headers={**headers, "Accept": "text/event-stream"},
    ) as reply:
        if reply.status_code != 200:
            await reply.aread()
            return reply.status_code, [], reply.text
        lines = [line async for line in reply.aiter_lines()]
    return 200, sse_events(lines), conversation


async def test_a_voice_turn_streams_text_and_audio_sentence_by_sentence(client, member) -> None:
    created = await client.post("/api/v1/personas", headers=member, json=PERSONA)
    assert created.status_code == 201, created.text
    persona_id = created.json()["id"]
    status, events, conversation = await talk(
        client, member, persona_id, await recording(client, member, QUESTION), maxTokens="120"
    )
    assert status == 200, conversation
    names = [name for name, _ in events]
    assert names[0] == "transcript"
    transcript = events[0][1]["text"]
    assert words(transcript) == words(QUESTION)
    assert events[0][1]["language"] == "en"
    assert names[-1] == "completed"
    audio = [data for name, data in events if name == "audio"]
    assert len(audio) >= 2, names
    # The first sentence is heard while the reply is still being written.
    last_delta = max(i for i, name in enumerate(names) if name == "delta")
    assert names.index("audio") < last_delta, names
    reply_text = "".join(data["text"] for name, data in events if name == "delta")
    assert [a["index"] for a in audio] == list(range(len(audio)))
    assert " ".join(a["text"] for a in audio).split() == reply_text.split()
    for a in audio:
        assert (a["format"], a["contentType"], a["sampleRate"]) == ("wav", "audio/wav", 22050)
        with av.open(io.BytesIO(base64.b64decode(a["data"]))) as container:
            assert sum(f.samples for f in container.decode(audio=0)) > 0
    # The stored message is the transcript, and the model read it.
    messages = await client.get(
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/messages", headers=member
    )
    stored = messages.json()["messages"]
    assert [(m["role"], m["text"]) for m in stored] == [
        ("user", transcript),
        ("assistant", events[-1][1]["reply"]["text"]),
    ]
    trace = await client.get(f"/api/v1/traces/{events[-1][1]['reply']['traceId']}", headers=member)
    assert trace.status_code == 200, trace.text
    assert trace.json()["messages"][-1] == {"role": "user", "content": transcript}


def spoken_without_variation(text: str) -> bytes:
    """`text` spoken (WAV) by the fleet's Piper voice with its sampling noise off. Piper samples
    noise for every utterance, so its recordings of one text differ; Whisper once heard this
    test's number as "212-800-67-5309" (not a phone number) in CI. Without noise the recording,
    and so its transcript, is the same on every run. Spoken here, not through the gateway's
    /audio/speech, which would redact the number before speaking it."""
    from piper import PiperVoice, SynthesisConfig

    voice = PiperVoice.load(speech_voice_path(None))
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    chunks = list(voice.synthesize(text, syn_config=quiet))
    return wav(b"".join(c.audio_int16_bytes for c in chunks), chunks[0].sample_rate)


def samples_of(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(f.samples for f in container.decode(audio=0))


# Every bad recording, and the start of the reason each is refused with.
_LONG = wav(np.zeros((MAX_AUDIO_SECONDS + 2) * 8_000, dtype="<i2").tobytes(), 8_000)
BAD_AUDIO = {
    "empty": (b"", "audio is empty"),
    "not audio": (b"just some notes, not a recording\n" * 40, "audio is not an audio file"),
    # A WAV header naming a codec (0x4242) FFmpeg has no decoder for.
    "codec": (
        _LONG[:20] + (0x4242).to_bytes(2, "little") + _LONG[22:2000],
        "audio uses a codec that cannot be decoded",
    ),
    "too long": (_LONG, f"audio is too long: more than {MAX_AUDIO_SECONDS} seconds"),
}


# -- the WebSocket -----------------------------------------------------------------------------


def ws_url(base: str, headers: dict[str, str]) -> str:
    token = headers["Authorization"].removeprefix("Bearer ")
    return base.replace("http://", "ws://") + f"/api/v1/ws?access_token={token}"


async def ws_voice_turn(
    socket: ClientConnection, start: dict[str, Any], audio: bytes, piece: int = 16_384
) -> list[dict[str, Any] | bytes]:
    """Send a recording (audio.start, binary frames, audio.end) and read every frame of its
    request until the turn ends (`typing` stopped); binary frames are kept as bytes."""
    request_id = start.setdefault("requestId", uuid.uuid4().hex[:12])
    await socket.send(json.dumps({"type": "audio.start", **start}))
    for i in range(0, len(audio), piece):
        await socket.send(audio[i : i + piece])
    await socket.send(json.dumps({"type": "audio.end", "requestId": request_id}))
    frames: list[dict[str, Any] | bytes] = []
    while True:
        raw = await socket.recv()
        frame: dict[str, Any] | bytes = raw if isinstance(raw, bytes) else json.loads(raw)
        frames.append(frame)
        if isinstance(frame, dict) and frame.get("requestId") != request_id:
            raise AssertionError(f"a frame of another request: {frame}")
        if isinstance(frame, dict) and frame["type"] == "typing" and frame["state"] == "stopped":
            return frames


async def test_a_voice_turn_over_the_websocket(conversation_fleet, client, member) -> None:
    persona_id = await new_persona(client, member)
    # Raw PCM, as a browser's audio worklet records it: the gateway gives it a WAV header.
    pcm = await recording(client, member, QUESTION, "pcm")
    async with connect(ws_url(conversation_fleet.url, member), max_size=2**24) as socket:
        frames = await ws_voice_turn(
            socket,
            {
                "personaId": persona_id,
                "conversationId": "ws-voice",
                "format": "pcm16",
                "sampleRate": 22_050,
                "maxTokens": 120,
                "responseFormat": "wav",
            },
            pcm,
        )
    kinds = [f["type"] if isinstance(f, dict) else "binary" for f in frames]
    assert kinds[0] == "transcript", kinds
    transcript = frames[0]["text"]  # type: ignore[index]
    assert words(transcript) == words(QUESTION)
    assert kinds[-2:] == ["completed", "typing"], kinds
    # Each `audio` frame is followed at once by the binary frame of its sentence.
    audio = [(f, frames[i + 1]) for i, f in enumerate(frames) if kinds[i] == "audio"]
    assert len(audio) >= 2, kinds
    assert kinds.count("binary") == len(audio)
    for n, (frame, data) in enumerate(audio):
        assert isinstance(frame, dict) and isinstance(data, bytes)
        assert frame["index"] == n and frame["size"] == len(data)
        assert (frame["contentType"], frame["sampleRate"]) == ("audio/wav", 22050)
        assert frame["conversationId"] == "ws-voice"
        assert samples_of(data) > 0
    last_delta = max(i for i, kind in enumerate(kinds) if kind == "delta")
    assert kinds.index("audio") < last_delta, kinds
    completed = frames[-2]
    assert isinstance(completed, dict)
    reply = completed["reply"]["text"]
    assert " ".join(f["text"] for f, _ in audio).split() == reply.split()
    messages = await client.get(
        f"/api/v1/personas/{persona_id}/conversations/ws-voice/messages", headers=member
    )
    assert [(m["role"], m["text"]) for m in messages.json()["messages"]] == [
        ("user", transcript),
        ("assistant", reply),
    ]


async def test_the_messages_route_takes_a_recording_spoken_back_in_the_personas_voice(
    client, member
) -> None:
    voices = await client.get("/api/v1/audio/voices", headers=member)
    assert voices.json() == {"voices": [VOICE], "default": VOICE, "model": VOICE}
    refused = await client.post(
        "/api/v1/personas", headers=member, json={**PERSONA, "voice": {"name": "alloy"}}
    )
    assert refused.status_code == 422, refused.text
    assert "voice.name 'alloy' is not a voice the reasoning service offers" in refused.text
    persona_id = await new_persona(client, member, voice={"name": VOICE, "speed": 2.0})
    persona = await client.get(f"/api/v1/personas/{persona_id}", headers=member)
    assert persona.json()["voice"] == {"name": VOICE, "speed": 2.0}
    status, events, conversation = await talk(
        client,
        member,
        persona_id,
        await recording(client, member, QUESTION),
        route="messages",
        maxTokens="60",
    )
    assert status == 200, conversation
    names = [name for name, _ in events]
    assert names[0] == "transcript" and names[-1] == "completed", names
    assert words(events[0][1]["text"]) == words(QUESTION)
    spoken = next(data for name, data in events if name == "audio")
    # The persona speaks at twice the normal rate: its sentence is much shorter than the same
    # sentence spoken at speed 1.
    normal = await recording(client, member, spoken["text"], "wav", speed=1.0)
    assert samples_of(base64.b64decode(spoken["data"])) < 0.75 * samples_of(normal)
    messages = await client.get(
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/messages", headers=member
    )
    assert [m["text"] for m in messages.json()["messages"]] == [
        events[0][1]["text"],
        events[-1][1]["reply"]["text"],
    ]
    # A typed message to the same route is still a typed turn.
    typed = await client.post(
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/messages",
        headers=member,
        json={"text": "Thanks.", "options": {"maxTokens": 4}},
    )
    assert typed.status_code == 200, typed.text
    assert typed.json()["reply"]["text"]


async def test_a_spoken_phone_number_is_redacted_by_the_tenants_dlp_policy(
    conversation_fleet, client, member
) -> None:
    audio = await asyncio.to_thread(spoken_without_variation, "My phone number is 212 867 5309.")
    persona_id = await new_persona(client, member)
    status, events, conversation = await talk(client, member, persona_id, audio, maxTokens="20")
    assert status == 200, conversation
    heard = events[0][1]["text"]
    assert "[REDACTED:phone]" in heard and "867" not in heard, heard
    messages = await client.get(
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/messages", headers=member
    )
    assert messages.json()["messages"][0]["text"] == heard
    trace = await client.get(f"/api/v1/traces/{events[-1][1]['reply']['traceId']}", headers=member)
    assert trace.json()["messages"][-1] == {"role": "user", "content": heard}
    # A tenant whose policy blocks: refused before the turn, on every voice route.
    blocking = await conversation_fleet.new_tenant()
    await conversation_fleet.ctx.runtime.db.execute(
        "UPDATE tenants SET dlp_policy = 'block' WHERE id = $1", blocking
    )
    strict = await conversation_fleet.login(blocking, "member")
    strict_persona = await new_persona(client, strict)
    for route in ("voice-messages", "messages"):
        status, _, body = await talk(client, strict, strict_persona, audio, route=route)
        assert status == 422, (route, body)
        assert json.loads(body)["code"] == "sensitive_data_blocked"
    async with connect(ws_url(conversation_fleet.url, strict), max_size=2**24) as socket:
        frames = await ws_voice_turn(
            socket, {"personaId": strict_persona, "conversationId": "ws-dlp"}, audio
        )
    assert frames[0]["problem"]["code"] == "sensitive_data_blocked"  # type: ignore[index]
    listed = await client.get(
        f"/api/v1/personas/{strict_persona}/conversations/ws-dlp/messages", headers=strict
    )
    assert listed.json()["messages"] == []


async def test_bad_audio_is_refused_with_its_reason_on_every_route(
    conversation_fleet, client, member
) -> None:
    persona_id = await new_persona(client, member)
    for route in ("voice-messages", "messages"):
        for case, (data, reason) in BAD_AUDIO.items():
            status, _, body = await talk(client, member, persona_id, data, route=route)
            assert status == 422, (route, case, body)
            assert reason in json.loads(body)["detail"], (route, case)
        silence = wav(np.zeros(2 * 16_000, dtype="<i2").tobytes(), 16_000)
        status, _, body = await talk(client, member, persona_id, silence, route=route)
        assert status == 422, body
        assert json.loads(body)["code"] == "no_speech"
    async with connect(ws_url(conversation_fleet.url, member), max_size=2**24) as socket:
        for case, (data, reason) in BAD_AUDIO.items():
            frames = await ws_voice_turn(
                socket, {"personaId": persona_id, "conversationId": "ws-bad"}, data
            )
            problem = frames[0]["problem"]  # type: ignore[index]
            assert problem["status"] == 422 and reason in problem["detail"], case
        # Audio with no recording open, a raw recording without its rate, audio.end of nothing.
        await socket.send(b"RIFF")
        assert json.loads(await socket.recv())["problem"]["code"] == "invalid_frame"
        start = {"type": "audio.start", "personaId": persona_id, "conversationId": "c"}
        await socket.send(json.dumps({**start, "format": "pcm16"}))
        refused = json.loads(await socket.recv())["problem"]
        assert refused["errors"][0]["pointer"] == "/sampleRate"
        await socket.send(json.dumps({"type": "audio.end"}))
        assert json.loads(await socket.recv())["problem"]["code"] == "no_recording"
    listed = await client.get(
        f"/api/v1/personas/{persona_id}/conversations/ws-bad/messages", headers=member
    )
    assert listed.json()["messages"] == []


async def test_voice_routes_keep_tenants_apart(conversation_fleet, client, member) -> None:
    persona_id = await new_persona(client, member)
    audio = await recording(client, member, QUESTION)
    other = await conversation_fleet.login(await conversation_fleet.new_tenant(), "member")
    for route in ("voice-messages", "messages"):
        status, _, body = await talk(client, other, persona_id, audio, route=route)
        assert status == 404, (route, body)
        assert json.loads(body)["code"] == "not_found"
    async with connect(ws_url(conversation_fleet.url, other), max_size=2**24) as socket:
        frames = await ws_voice_turn(
            socket, {"personaId": persona_id, "conversationId": "theirs"}, audio
        )
    assert frames[0]["problem"]["status"] == 404  # type: ignore[index]
    # Nothing was stored with the persona, which its tenant sees unchanged.
    conversations = await client.get(f"/api/v1/personas/{persona_id}/conversations", headers=member)
    assert conversations.json()["conversations"] == []
    # The persona's voice is its tenant's: another tenant can neither read nor change it.
    changed = await client.patch(
        f"/api/v1/personas/{persona_id}", headers=other, json={"voice": {"speed": 3}}
    )
    assert changed.status_code == 404


async def test_voice_routes_count_against_the_tenants_rate_limit(
    conversation_fleet, client
) -> None:
    # One token a minute after a burst of two: the bucket, not the machine's speed, decides.
    overrides = {"standard": {"perMinute": 1, "burst": 2, "concurrency": 5}}
    limited = await conversation_fleet.login(
        await conversation_fleet.new_tenant(tier="standard"), "member"
    )
    other = await conversation_fleet.login(
        await conversation_fleet.new_tenant(tier="standard"), "member"
    )
    persona_id = await new_persona(client, limited)
    theirs = await new_persona(client, other)
    not_audio = BAD_AUDIO["not audio"][0]
    # And a small recording limit, for the WebSocket's.
    async with conversation_fleet.another_gateway(
        rate_limit_overrides=overrides, audio_max_upload_bytes=100_000
    ) as gateway:
        async with httpx.AsyncClient(base_url=gateway.http_url, timeout=120) as http:
            # Two turns the bucket admits (refused later, for their audio), then none.
            for route in ("voice-messages", "messages"):
                status, _, body = await talk(http, limited, persona_id, not_audio, route=route)
                assert status == 422, body
            status, _, body = await talk(http, limited, persona_id, not_audio, route="messages")
            assert status == 429, body
            assert json.loads(body)["code"] == "rate_limited"
            # Another tenant of the same tier has its own bucket.
            status, _, body = await talk(http, other, theirs, not_audio)
            assert status == 422, body
        async with connect(ws_url(gateway.http_url, limited)) as socket:
            start = {"personaId": persona_id, "conversationId": "ws-limited", "requestId": "r3"}
            await socket.send(json.dumps({"type": "audio.start", **start}))
            refused = json.loads(await socket.recv())
            # The socket stays open.
            await socket.send(json.dumps({"type": "ping", "requestId": "still-open"}))
            assert json.loads(await socket.recv()) == {"type": "pong", "requestId": "still-open"}
        # A recording over the limit is dropped with 413 (the other tenant's bucket admits it).
        async with connect(ws_url(gateway.http_url, other)) as socket:
            start = {"personaId": theirs, "conversationId": "ws-big", "requestId": "big"}
            await socket.send(json.dumps({"type": "audio.start", **start}))
            await socket.send(b"\0" * 60_000)
            await socket.send(b"\0" * 60_000)
            too_big = json.loads(await socket.recv())
            stopped = json.loads(await socket.recv())
    assert refused["type"] == "error" and refused["requestId"] == "r3"
    assert refused["problem"]["code"] == "rate_limited"
    assert too_big["requestId"] == "big" and too_big["problem"]["status"] == 413
    assert "the recording is larger than 100000 bytes" in too_big["problem"]["detail"]
    assert (stopped["type"], stopped["state"]) == ("typing", "stopped")


async def test_a_socket_recording_is_cut_off_when_its_token_expires(
    conversation_fleet, member
) -> None:
    ctx = conversation_fleet.ctx
    principal = (await ctx.tokens.verify(member["Authorization"].removeprefix("Bearer "))).principal
    short = TokenService(
        ctx.tokens.keys, issuer=ctx.tokens.issuer, audience=ctx.tokens.audience, ttl_seconds=10
    )
    token = (await short.issue(principal)).token
    url = conversation_fleet.url.replace("http://", "ws://") + f"/api/v1/ws?access_token={token}"
    async with connect(url) as socket:
        start = {"personaId": str(uuid.uuid4()), "conversationId": "expiring", "requestId": "r"}
        await socket.send(json.dumps({"type": "audio.start", **start}))
        await socket.send(b"RIFF")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await socket.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        4401,
        "the access token has expired",
    )

"""A turn by voice through the running gateway and the fleet behind it, with the real models:
a recording in, its transcript stored as the message and read by the model, the reply back as
text deltas and per-sentence audio, the first audio before the text is finished."""

from __future__ import annotations

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

pytestmark = pytest.mark.integration

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


async def recording(client: httpx.AsyncClient, headers: dict[str, str], text: str) -> bytes:
    reply = await client.post(
        "/api/v1/audio/speech", json={"input": text, "responseFormat": "mp3"}, headers=headers
    )
    assert reply.status_code == 200, reply.text
    return reply.content


async def talk(
    client: httpx.AsyncClient, headers: dict[str, str], persona_id: str, audio: bytes, **form: str
) -> tuple[int, list[tuple[str, dict[str, Any]]], str]:
    conversation = f"voice-{uuid.uuid4().hex[:8]}"
    async with client.stream(
        "POST",
        f"/api/v1/personas/{persona_id}/conversations/{conversation}/voice-messages",
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


async def test_a_voice_turn_refuses_bad_audio_and_silence_before_the_turn(client, member) -> None:
    created = await client.post("/api/v1/personas", headers=member, json=PERSONA)
    persona_id = created.json()["id"]
    status, _, body = await talk(client, member, persona_id, b"not a recording " * 30)
    assert status == 422
    assert "audio is not an audio file" in json.loads(body)["detail"]
    silence = np.zeros(2 * 16_000, dtype="<i2").tobytes()
    wav = (
        b"RIFF"
        + (36 + len(silence)).to_bytes(4, "little")
        + b"WAVEfmt "
        + bytes.fromhex("1000000001000100803e0000007d000002001000")
        + b"data"
        + len(silence).to_bytes(4, "little")
        + silence
    )
    status, _, body = await talk(client, member, persona_id, wav)
    assert status == 422, body
    assert json.loads(body)["code"] == "no_speech"

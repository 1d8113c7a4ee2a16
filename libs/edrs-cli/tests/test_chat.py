"""`edrs chat`: a persona's reply streamed to the terminal, and the errors a user can meet.

Against real reasoning (the real models), memory, persona and gateway services in-process; the
command runs as a user runs it, in its own process.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from edrs_core.testing import HTTP_TIMEOUT, engine_settings, running_service
from edrs_gateway.app import definition as gateway_definition
from edrs_gateway.context import GatewayContext
from edrs_gateway.store import NewTenant
from edrs_memory.app import definition as memory_definition
from edrs_persona.app import definition as persona_definition
from edrs_reasoning.app import definition as reasoning_definition

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "correct horse battery staple"


@dataclass
class Gateway:
    url: str
    token: str


@pytest.fixture(scope="module")
async def gateway(postgres_engine, redis_engine, nats_engine) -> AsyncIterator[Gateway]:
    def engines(service: str, redis_db: int) -> dict[str, str]:
        return engine_settings(
            postgres_engine,
            redis_engine,
            nats_engine,
            database=f"test_gateway_conv_cli_{service}",
            redis_db=redis_db,
        )

    async with (
        running_service(
            reasoning_definition, start_timeout=180.0, **engines("reasoning", 13)
        ) as reasoning,
        running_service(
            memory_definition, peers={"reasoning": reasoning.grpc_address}, **engines("memory", 13)
        ) as memory,
        running_service(
            persona_definition,
            peers={"memory": memory.grpc_address, "reasoning": reasoning.grpc_address},
            **engines("persona", 13),
        ) as persona,
        running_service(
            gateway_definition,
            # Reasoning too: the audio routes (`--voice`, `--speak`) call it.
            peers={"persona": persona.grpc_address, "reasoning": reasoning.grpc_address},
            key_encryption_secret="test-key-encryption-secret-0123456789",
            **engines("gateway", 12),
        ) as svc,
    ):
        rt = svc.runner.runtime
        assert rt is not None
        ctx = GatewayContext.build(rt.settings, rt)
        tenant = await ctx.tenants.create(NewTenant(name=f"T {uuid.uuid4().hex[:10]}"))
        email = f"chat-{uuid.uuid4().hex[:8]}@example.com"
        await ctx.users.create(
            tenant.id,
            email=email,
            display_name="chat",
            password_hash=await ctx.passwords.hash(PASSWORD),
            role="member",
        )
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=svc.http_url) as client:
            reply = await client.post(
                "/api/v1/auth/token",
                json={
                    "grantType": "password",
                    "tenantId": str(tenant.id),
                    "email": email,
                    "password": PASSWORD,
                },
            )
            assert reply.status_code == 200, reply.text
            token = reply.json()["accessToken"]
            made = await client.post(
                "/api/v1/personas",
                headers={"Authorization": f"Bearer {token}"},
                json={"name": "Ada", "role": "assistant", "instructions": "Answer briefly."},
            )
            assert made.status_code == 201, made.text
        yield Gateway(svc.http_url, token)


async def edrs(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `edrs <args>` in its own process (the services share this test's event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edrs_cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_chat_message_prints_the_streamed_reply(gateway: Gateway, tmp_path) -> None:
    code, out, err = await edrs(
        "chat",
        "ada",  # by name, case-insensitive
        "--message",
        "Say hello.",
        "--max-tokens",
        "8",
        "--conversation",
        "cli-test",
        "--url",
        gateway.url,
        "--token",
        gateway.token,
        "--state-dir",
        str(tmp_path),
    )
    assert code == 0, err
    assert out.strip(), "no reply printed"
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, base_url=gateway.url) as client:
        personas = await client.get(
            "/api/v1/personas", headers={"Authorization": f"Bearer {gateway.token}"}
        )
        persona_id = personas.json()["personas"][0]["id"]
        messages = await client.get(
            f"/api/v1/personas/{persona_id}/conversations/cli-test/messages",
            headers={"Authorization": f"Bearer {gateway.token}"},
        )
    stored = messages.json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert out.strip() == stored[1]["text"].strip()


async def test_chat_explains_what_went_wrong(gateway: Gateway, tmp_path) -> None:
    common = ["--url", gateway.url, "--state-dir", str(tmp_path), "--message", "hi"]
    code, _, err = await edrs("chat", "Nobody", "--token", gateway.token, *common)
    assert code == 1 and "no persona named 'Nobody'" in err, err
    code, _, err = await edrs("chat", str(uuid.uuid4()), "--token", gateway.token, *common)
    assert code == 1 and "not found" in err, err
    code, _, err = await edrs("chat", "Ada", "--token", "not-a-token", *common)
    assert code == 1 and "authentication failed" in err, err
    code, _, err = await edrs("chat", "Ada", *common, env={"PATH": "/usr/bin:/bin"})
    assert code == 1 and "no credentials" in err, err


async def test_chat_by_voice_prints_what_was_heard_and_writes_the_spoken_reply(
    gateway: Gateway, tmp_path
) -> None:
    headers = {"Authorization": f"Bearer {gateway.token}"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as client:
        spoken = await client.post(
            "/api/v1/audio/speech",
            json={"input": "What is your name?", "responseFormat": "wav"},
            headers=headers,
        )
    assert spoken.status_code == 200, spoken.text
    recording, reply_audio = tmp_path / "question.wav", tmp_path / "reply.wav"
    recording.write_bytes(spoken.content)
    common = ["--url", gateway.url, "--token", gateway.token, "--state-dir", str(tmp_path)]
    code, out, err = await edrs(
        "chat",
        "Ada",
        "--voice",
        str(recording),
        "--speak",
        str(reply_audio),
        "--max-tokens",
        "24",
        *common,
    )
    assert code == 0, err
    assert "(heard) What is your name?" in err
    assert out.strip(), "no reply printed"
    data = reply_audio.read_bytes()
    assert data[:4] == b"RIFF" and len(data) > 44 + 22_050, "at least half a second of speech"
    # --speak with a typed message: the reply spoken afterwards.
    typed_audio = tmp_path / "typed.wav"
    code, out, err = await edrs(
        "chat",
        "Ada",
        "-m",
        "Say hello.",
        "--max-tokens",
        "8",
        "--speak",
        str(typed_audio),
        *common,
    )
    assert code == 0, err
    assert typed_audio.read_bytes()[:4] == b"RIFF"
    code, _, err = await edrs("chat", "Ada", "--speak", str(typed_audio), *common)
    assert code == 2 and "--speak needs --message or --voice" in err, err


def test_tool_events_are_one_line_each() -> None:
    from edrs_cli.chat import tool_line

    call = {
        "tool": "orders__wipe",
        "arguments": {"confirm": True},
        "status": "held",
        "reason": "needs approval",
    }
    assert tool_line("tool_call", call) == (
        '[tool] orders__wipe {"confirm": true}: held (needs approval)'
    )
    assert tool_line("tool_result", {"tool": "t", "content": "abc", "isError": False}) == (
        "[tool] t: 3 characters"
    )
    assert tool_line("tool_result", {"tool": "t", "content": "boom", "isError": True}) == (
        "[tool] t failed: boom"
    )

"""The example AI service as wsgate's real upstream (uvicorn on loopback):
identity from wsgate's headers, a token stream on the chat socket, and an
answer published to the durable channel that a second client reads."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from urllib.parse import quote

import pytest
import websockets

from wsgate import frames

SQL = "SELECT region, sum(revenue) FROM sales GROUP BY region"
CHART = {"type": "bar", "x": "region", "y": "revenue"}


async def recv_json(ws, timeout: float = 5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def expected_answer(prompt: str) -> list[dict]:
    words = f"answer: {prompt}".split()
    return [frames.token(w, i) for i, w in enumerate(words)] + [frames.complete(len(words), sql=SQL, chart_config=CHART)]


def test_chat_through_wsgate_sees_the_verified_identity_and_streams_tokens(gate, mint):
    async def main():
        async with websockets.connect(f"{gate.ws}/ws/chat?token={quote(mint('alice', tenant='acme'))}") as ws:
            assert await recv_json(ws) == {"type": "hello", "data": {"user": "alice", "tenant": "acme", "verified": False}}
            await ws.send(json.dumps({"type": "prompt", "data": {"text": "revenue by region"}}))
            got = [await recv_json(ws) for _ in range(5)]
            assert got == expected_answer("revenue by region")

    asyncio.run(main())


def test_ask_over_chat_publishes_a_durable_stream_another_socket_reads(gate, mint, session_id):
    async def main():
        stream_url = f"{gate.ws}/ws/ai/stream/{session_id}?token={quote(mint('alice', sid=session_id))}"
        async with websockets.connect(stream_url) as stream, websockets.connect(
            f"{gate.ws}/ws/chat?token={quote(mint('alice'))}"
        ) as chat:
            await recv_json(chat)  # hello
            await chat.send(json.dumps({"type": "ask", "data": {"session": session_id, "text": "what is revenue"}}))
            assert await recv_json(chat) == {"type": "accepted", "data": {"channel": f"ai:stream:{session_id}"}}
            want = expected_answer("what is revenue")
            got = [await recv_json(stream) for _ in want]
            assert [env["type"] for env in got] == ["wsgate.message"] * len(want)
            assert [env["data"] for env in got] == want

    asyncio.run(main())


def test_the_service_refuses_callers_without_wsgate_headers(ai_service, session_id):
    """Header mode's trust assumption, enforced: no x-user-id, no identity."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{ai_service.port}/sessions/{session_id}/ask", data=b"hi", method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 401
    assert "x-user-id" in json.loads(err.value.read())["detail"]

    async def direct_ws():
        with pytest.raises(websockets.InvalidStatusCode) as err:
            async with websockets.connect(f"ws://127.0.0.1:{ai_service.port}/ws/chat"):
                pass
        assert err.value.status_code == 403

    asyncio.run(direct_ws())


def test_http_ask_publishes_to_the_session_stream(gate, ai_service, mint, session_id):
    async def main():
        url = f"{gate.ws}/ws/ai/stream/{session_id}?token={quote(mint('bob', sid=session_id))}"
        async with websockets.connect(url) as stream:
            req = urllib.request.Request(
                f"http://127.0.0.1:{ai_service.port}/sessions/{session_id}/ask", data=b"hi there", method="POST",
                headers={"Content-Type": "text/plain", "x-user-id": "bob", "x-tenant-id": "acme"},
            )
            with urllib.request.urlopen(req, timeout=5) as res:
                assert res.status == 202
                assert json.loads(res.read()) == {"channel": f"ai:stream:{session_id}", "user": "bob"}
            want = expected_answer("hi there")
            assert [(await recv_json(stream))["data"] for _ in want] == want

    asyncio.run(main())

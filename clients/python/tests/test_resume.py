"""A Python WebSocket client on wsgate's durable route: it reads envelopes,
drops mid-stream, resumes with since=, and gets exactly what it missed."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import pytest
import websockets

from wsgate import AsyncPublisher, History, Publisher, frames


async def recv_json(ws, timeout: float = 5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def stream_url(gate, session: str, token: str, since: str | None = None) -> str:
    url = f"{gate.ws}/ws/ai/stream/{session}?token={quote(token)}"
    return url + (f"&since={quote(since)}" if since else "")


def test_drop_mid_stream_and_resume_gets_exactly_the_missed_tokens(gate, redis_url, mint, session_id):
    token = mint("alice", sid=session_id)
    channel = f"ai:stream:{session_id}"
    words = [f"w{i}" for i in range(10)]

    async def main():
        pub = Publisher(redis_url, durable={"ai:stream:*": History(size=100)})
        try:
            ws = await websockets.connect(stream_url(gate, session_id, token))
            for i in range(4):
                pub.publish(channel, frames.token(words[i], i))
            seen = [await recv_json(ws) for _ in range(4)]
            # The link drops: no closing handshake, as when a laptop sleeps.
            ws.transport.abort()
            await ws.wait_closed()
            # The stream goes on without us.
            for i in range(4, 10):
                pub.publish(channel, frames.token(words[i], i))
            for env in seen:
                assert env["type"] == "wsgate.message" and isinstance(env["pos"], str)
            assert [env["data"] for env in seen] == [frames.token(words[i], i) for i in range(4)]

            async with websockets.connect(stream_url(gate, session_id, token, since=seen[-1]["pos"])) as ws:
                assert await recv_json(ws) == {"type": "wsgate.recovery", "recovered": True, "replayed": 6}
                missed = [await recv_json(ws) for _ in range(6)]
                assert [env["data"] for env in missed] == [frames.token(words[i], i) for i in range(4, 10)]
                # Then the live stream, once: no replayed message comes again.
                pub.publish(channel, frames.complete(10))
                live = await recv_json(ws)
                assert live["data"] == {"type": "complete", "data": {"tokens": 10}}
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.3)
                positions = [env["pos"] for env in seen + missed + [live]]
                assert len(set(positions)) == 11
        finally:
            pub.close()

    asyncio.run(main())


def test_resume_from_a_position_of_a_reset_history_says_so(gate, redis_url, rdb, mint, session_id):
    """When history is lost (here: deleted, as a Redis restart would), a
    resume gets recovered:false, not a silently broken stream."""
    token = mint("alice", sid=session_id)
    channel = f"ai:stream:{session_id}"

    async def main():
        async with AsyncPublisher(redis_url) as pub:
            async with websockets.connect(stream_url(gate, session_id, token)) as ws:
                await pub.publish(channel, frames.token("a", 0), durable=True)
                pos = (await recv_json(ws))["pos"]
            rdb.delete(f"wsgate:history:{{{channel}}}", f"wsgate:epoch:{{{channel}}}")
            await pub.publish(channel, frames.token("b", 1), durable=True)
            async with websockets.connect(stream_url(gate, session_id, token, since=pos)) as ws:
                assert await recv_json(ws) == {"type": "wsgate.recovery", "recovered": False, "reason": "epoch_changed"}

    asyncio.run(main())


def test_a_token_for_another_session_cannot_read_the_stream(gate, mint, session_id):
    async def main():
        with pytest.raises(websockets.InvalidStatusCode) as err:
            async with websockets.connect(stream_url(gate, session_id, mint("mallory", sid="other"))):
                pass
        assert err.value.status_code == 403

    asyncio.run(main())

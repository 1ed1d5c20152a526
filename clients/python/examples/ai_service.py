"""An AI service behind wsgate, in both roles wsgate gives a service.

* **WebSocket upstream**: wsgate verifies the browser's token and dials
  ``/ws/chat`` here with ``x-user-id``/``x-tenant-id`` (and, when configured,
  a signed ``X-Wsgate-Assertion``). The service greets with that identity and
  answers each prompt with a token stream on the same socket.
* **Publisher**: an answer can instead go to Redis channel
  ``ai:stream:{session}`` through wsgate's durable publish script, where any
  number of browser tabs on any wsgate replica read it, and resume it after
  a dropped connection (route ``/ws/ai/stream/{session}`` with ``history``).
  Ask over the chat socket with ``{"type": "ask", "data": {"session", "text"}}``
  or with ``POST /sessions/{session}/ask``.

Run it (Debian: apt-get install python3-fastapi python3-uvicorn python3-redis python3-jwt):

    PYTHONPATH=clients/python WSGATE_REDIS_URL=redis://127.0.0.1:6379/0 \\
      python3 -m uvicorn --app-dir clients/python/examples ai_service:app --port 8000

Environment: WSGATE_REDIS_URL, or WSGATE_ADMIN_URL (+ WSGATE_PUBLISH_TOKEN) to
publish through wsgate's admin API; WSGATE_HISTORY_SIZE / WSGATE_HISTORY_TTL
(seconds) matching the route's ``history``; WSGATE_JWKS_URL and
WSGATE_ASSERTION_AUDIENCE to require the signed assertion; AI_TOKEN_DELAY,
seconds between tokens (default 0.05).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, AsyncIterator, Optional

from fastapi import Body, Depends, FastAPI, HTTPException, WebSocket, WebSocketDisconnect

from wsgate import AsyncPublisher, History, Identity, PublishError, frames
from wsgate.fastapi import WsgateIdentity

TOKEN_DELAY = float(os.environ.get("AI_TOKEN_DELAY", "0.05"))
HISTORY = History(
    size=int(os.environ.get("WSGATE_HISTORY_SIZE", "1000")),
    ttl=float(os.environ.get("WSGATE_HISTORY_TTL", "600")),
)

identity = WsgateIdentity.from_env()
app = FastAPI(title="example AI service behind wsgate")

# Owned by the app's startup/shutdown handlers.
publisher: Optional[AsyncPublisher] = None
streams: set[asyncio.Task] = set()


@app.on_event("startup")
async def open_publisher() -> None:
    global publisher
    durable = {"ai:stream:*": HISTORY}
    if os.environ.get("WSGATE_REDIS_URL"):
        publisher = AsyncPublisher(os.environ["WSGATE_REDIS_URL"], durable=durable)
    elif os.environ.get("WSGATE_ADMIN_URL"):
        publisher = AsyncPublisher(
            admin_url=os.environ["WSGATE_ADMIN_URL"], token=os.environ.get("WSGATE_PUBLISH_TOKEN") or None
        )


@app.on_event("shutdown")
async def close_publisher() -> None:
    for task in list(streams):
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    if publisher is not None:
        await publisher.aclose()


def answer(prompt: str) -> list[str]:
    """The model: a deterministic stand-in that streams the prompt back."""
    return f"answer: {prompt}".split()


async def generate(prompt: str) -> AsyncIterator[frames.Frame]:
    words = answer(prompt)
    for i, word in enumerate(words):
        if TOKEN_DELAY:
            await asyncio.sleep(TOKEN_DELAY)
        yield frames.token(word, i)
    yield frames.complete(
        len(words),
        sql="SELECT region, sum(revenue) FROM sales GROUP BY region",
        chart_config={"type": "bar", "x": "region", "y": "revenue"},
    )


async def publish_answer(session: str, prompt: str) -> None:
    channel = f"ai:stream:{session}"
    assert publisher is not None
    sent = 0
    try:
        async for frame in generate(prompt):
            await publisher.publish(channel, frame)
            sent += 1
    except PublishError as err:
        # Tell the readers the stream broke, if Redis is back; else they see a gap.
        try:
            await publisher.publish(channel, frames.error("stream interrupted", code="publish_failed", index=sent))
        except PublishError:
            pass
        print(f"ai_service: publish to {channel} failed: {err}", flush=True)


def start_answer(session: str, prompt: str) -> str:
    if publisher is None:
        raise HTTPException(503, "no publisher: set WSGATE_REDIS_URL or WSGATE_ADMIN_URL")
    if not session or any(c in session for c in ":*?[]{}\\/") or len(session) > 256:
        raise HTTPException(400, "bad session id")
    task = asyncio.get_running_loop().create_task(publish_answer(session, prompt))
    streams.add(task)
    task.add_done_callback(streams.discard)
    return f"ai:stream:{session}"


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/sessions/{session}/ask", status_code=202)
async def ask(session: str, prompt: str = Body(..., media_type="text/plain"), who: Identity = Depends(identity)) -> dict[str, Any]:
    # A real service checks here that `session` belongs to who.user.
    return {"channel": start_answer(session, prompt), "user": who.user}


@app.websocket("/ws/chat")
async def chat(ws: WebSocket, who: Identity = Depends(identity)) -> None:
    await ws.accept()
    await ws.send_json({"type": "hello", "data": {"user": who.user, "tenant": who.tenant, "verified": who.verified}})
    try:
        while True:
            text = await ws.receive_text()
            try:
                msg = json.loads(text)
            except ValueError:
                msg = {"type": "prompt", "data": {"text": text}}
            kind = msg.get("type") if isinstance(msg, dict) else None
            data = msg.get("data") if isinstance(msg, dict) and isinstance(msg.get("data"), dict) else {}
            prompt = str(data.get("text", ""))
            if kind == "ask":
                try:
                    channel = start_answer(str(data.get("session", "")), prompt)
                except HTTPException as err:
                    await ws.send_json(frames.error(str(err.detail), code=str(err.status_code)))
                    continue
                await ws.send_json({"type": "accepted", "data": {"channel": channel}})
            elif kind == "prompt":
                async for frame in generate(prompt):
                    await ws.send_json(frame)
            else:
                await ws.send_json(frames.error("unknown message type", code="bad_request"))
    except WebSocketDisconnect:
        pass

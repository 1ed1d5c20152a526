"""Publisher and AsyncPublisher against a real redis-server, a real wsgate
admin listener, and a loopback HTTP server that records what it is sent."""

from __future__ import annotations

import asyncio
import http.server
import re
import threading

import pytest
import redis

from wsgate import AsyncPublisher, History, PublishError, Publisher, frames
from wsgate.publisher import history_keys

MARKED = re.compile(rb"^\x1ewsgate1 ([0-9a-f]{12}):(\d+-\d+)\n(.*)$", re.S)


def subscribe(r: redis.Redis, channel: str):
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(channel)
    ps.get_message(timeout=1)  # the subscribe confirmation
    return ps


def next_message(ps, timeout: float = 5.0) -> bytes:
    msg = ps.get_message(timeout=timeout)
    assert msg is not None, "no message published"
    return msg["data"]


def test_durable_publish_records_and_publishes_with_position(rdb, redis_url, session_id):
    channel = f"ai:stream:{session_id}"
    ps = subscribe(rdb, channel)
    with Publisher(redis_url) as pub:
        pub.publish(channel, frames.token("Revenue", 0), durable=True)
        pub.publish(channel, frames.token("grew", 1), durable=True)
    history, epoch_key, _ = history_keys(channel)
    epoch = rdb.get(epoch_key)
    entries = rdb.xrange(history)
    assert [e[1][b"d"] for e in entries] == [
        b'{"type":"token","data":{"token":"Revenue","index":0}}',
        b'{"type":"token","data":{"token":"grew","index":1}}',
    ]
    for want_id, want_payload in [(entries[0][0], entries[0][1][b"d"]), (entries[1][0], entries[1][1][b"d"])]:
        m = MARKED.match(next_message(ps))
        assert m, "the Pub/Sub payload lacks wsgate's durable marker"
        assert (m.group(1), m.group(2), m.group(3)) == (epoch, want_id, want_payload)
    # History(ttl=600) by default: every key expires 10 minutes after the last message.
    assert 599_000 < rdb.pttl(history) <= 600_000
    assert 599_000 < rdb.pttl(epoch_key) <= 600_000
    ps.close()


def test_history_size_trims_and_remembers_the_newest_trimmed_id(rdb, redis_url, session_id):
    channel = f"ai:stream:{session_id}"
    with Publisher(redis_url) as pub:
        for i in range(5):
            pub.publish(channel, frames.token(f"t{i}", i), durable=History(size=3, ttl=60))
    history, _, trimmed = history_keys(channel)
    entries = rdb.xrange(history)
    assert [e[1][b"d"] for e in entries] == [encode_token(i) for i in (2, 3, 4)]
    assert rdb.get(trimmed) is not None and rdb.get(trimmed) < entries[0][0]
    assert 59_000 < rdb.pttl(history) <= 60_000


def encode_token(i: int) -> bytes:
    return f'{{"type":"token","data":{{"token":"t{i}","index":{i}}}}}'.encode()


def test_plain_publish_is_unrecorded_and_unmarked(rdb, redis_url, session_id):
    channel = f"dashboard:{session_id}"
    ps = subscribe(rdb, channel)
    with Publisher(redis_url) as pub:
        pub.publish(channel, b"\x00raw\xff")
    assert next_message(ps) == b"\x00raw\xff"
    assert rdb.exists(*history_keys(channel)) == 0
    ps.close()


@pytest.mark.parametrize(
    "channel, durable",
    [("ai:stream:abc", True), ("ai:stream:abc:x", False), ("ai:stream", False), ("notifications:t:u", False)],
)
def test_durable_patterns_follow_wsgate_matching(rdb, redis_url, channel, durable):
    channel = channel.replace("abc", "abc" + str(id(rdb)))
    rdb.delete(*history_keys(channel))
    with Publisher(redis_url, durable={"ai:stream:*": History(size=10)}) as pub:
        pub.publish(channel, "x")
        assert (rdb.xlen(history_keys(channel)[0]) == 1) is durable
        pub.publish(channel, "y", durable=False)  # an explicit choice wins over the pattern
        assert rdb.xlen(history_keys(channel)[0]) == (1 if durable else 0)


def test_async_publisher_runs_the_same_script(rdb, redis_url, session_id):
    channel = f"ai:stream:{session_id}"

    async def main():
        async with AsyncPublisher(redis_url, durable={"ai:stream:*": History()}) as pub:
            await asyncio.gather(*(pub.publish(channel, frames.token(f"t{i}", i)) for i in range(3)))
            await pub.publish(channel, frames.complete(3))

    asyncio.run(main())
    data = [e[1][b"d"] for e in rdb.xrange(history_keys(channel)[0])]
    assert sorted(data[:3]) == [encode_token(i) for i in range(3)]
    assert data[3] == b'{"type":"complete","data":{"tokens":3}}'


def test_redis_down_raises_publish_error():
    with Publisher("redis://127.0.0.1:1/0", timeout=1) as pub:
        with pytest.raises(PublishError) as err:
            pub.publish("ai:stream:x", "x", durable=True)
    assert err.value.status is None
    assert isinstance(err.value.__cause__, redis.ConnectionError)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({}, "exactly one of"),
        ({"redis_url": "redis://x", "admin_url": "http://x"}, "exactly one of"),
        ({"redis_url": "redis://127.0.0.1:1", "token": "t"}, "token= is for admin_url="),
        ({"admin_url": "127.0.0.1:9090"}, "http:// or https://"),
        ({"admin_url": "http://127.0.0.1:9090", "token": "a\nb"}, "without line breaks"),
    ],
)
def test_bad_configuration_is_refused(kwargs, error):
    with pytest.raises(ValueError, match=error):
        Publisher(**kwargs)


def test_bad_publish_arguments_are_refused(redis_url):
    with Publisher(redis_url) as pub:
        with pytest.raises(ValueError, match="channel"):
            pub.publish("", "x")
        with pytest.raises(TypeError, match="durable"):
            pub.publish("c", "x", durable="yes")
    with pytest.raises(ValueError, match="size"):
        History(size=0)


class Recorder(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for wsgate's admin listener that records each
    request and answers with the status the test sets."""

    requests: list = []
    status = 204

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Recorder.requests.append((self.path, dict(self.headers), body))
        self.send_response(Recorder.status)
        msg = b"" if Recorder.status == 204 else b"redis unavailable\n"
        self.send_header("Content-Length", str(len(msg)))
        self.end_headers()
        self.wfile.write(msg)

    def log_message(self, *args):
        pass


@pytest.fixture()
def recorder():
    Recorder.requests, Recorder.status = [], 204
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    t.join()


def test_admin_publish_sends_the_bearer_token_and_raw_body(recorder):
    with Publisher(admin_url=recorder + "/", token="s3cret-publish-token") as pub:
        pub.publish("ai:stream:a b/c", frames.token("x", 0))
    [(path, headers, body)] = Recorder.requests
    assert path == "/publish?channel=ai%3Astream%3Aa%20b%2Fc"
    assert headers["Authorization"] == "Bearer s3cret-publish-token"
    assert body == b'{"type":"token","data":{"token":"x","index":0}}'


def test_admin_errors_carry_the_status_and_never_the_token(recorder):
    Recorder.status = 503

    async def main():
        async with AsyncPublisher(admin_url=recorder, token="s3cret-publish-token") as pub:
            await pub.publish("ai:stream:x", "x")

    with pytest.raises(PublishError) as err:
        asyncio.run(main())
    assert err.value.status == 503
    assert "redis unavailable" in str(err.value)
    assert "s3cret" not in str(err.value) and "s3cret" not in repr(err.value)
    assert Recorder.requests[0][1]["Authorization"] == "Bearer s3cret-publish-token"


def test_admin_publish_through_real_wsgate_is_recorded(gate, rdb, session_id):
    """POST /publish on wsgate's admin listener: wsgate's route config makes
    ai:stream:* durable, so the message lands in the history stream."""
    channel = f"ai:stream:{session_id}"
    with Publisher(admin_url=gate.admin) as pub:
        pub.publish(channel, frames.token("via-admin", 0))
    assert [e[1][b"d"] for e in rdb.xrange(history_keys(channel)[0])] == [
        b'{"type":"token","data":{"token":"via-admin","index":0}}'
    ]

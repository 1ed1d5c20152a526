"""The frame helpers produce exactly the JSON the dashboards parse."""

import pytest

from wsgate import frames
from wsgate.publisher import encode


@pytest.mark.parametrize(
    "frame, wire",
    [
        (frames.token("Revenue", 0), b'{"type":"token","data":{"token":"Revenue","index":0}}'),
        (frames.token("r\u00e9sum\u00e9", 7), '{"type":"token","data":{"token":"r\u00e9sum\u00e9","index":7}}'.encode()),
        (frames.complete(3), b'{"type":"complete","data":{"tokens":3}}'),
        (
            frames.complete(2, sql="SELECT 1", chart_config={"type": "bar", "x": "region"}),
            b'{"type":"complete","data":{"tokens":2,"sql":"SELECT 1","chartConfig":{"type":"bar","x":"region"}}}',
        ),
        (frames.error("model overloaded"), b'{"type":"error","data":{"message":"model overloaded"}}'),
        (
            frames.error("stream interrupted", code="publish_failed", index=4),
            b'{"type":"error","data":{"message":"stream interrupted","code":"publish_failed","index":4}}',
        ),
    ],
)
def test_frames_encode_to_the_documented_json(frame, wire):
    assert encode(frame) == wire


@pytest.mark.parametrize(
    "call",
    [
        lambda: frames.token("x", -1),
        lambda: frames.token("x", True),
        lambda: frames.token("x", 1.5),
        lambda: frames.complete(-2),
    ],
)
def test_bad_indexes_are_refused(call):
    with pytest.raises(ValueError, match="non-negative int"):
        call()


def test_token_text_must_be_a_string():
    with pytest.raises(TypeError):
        frames.token(b"bytes", 0)


def test_encode_passes_bytes_and_text_through():
    assert encode(b"\xff\x00") == b"\xff\x00"
    assert encode("plain text") == b"plain text"
    with pytest.raises(ValueError):
        encode({"x": float("nan")})  # not JSON

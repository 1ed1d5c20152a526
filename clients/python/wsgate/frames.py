"""The {"type", "data"} frames wsgate's dashboards render.

An AI answer streams as ``token`` frames (one per token, ``index`` counting
from 0), then one ``complete`` frame (how many tokens, and optionally the SQL
that was run and the chart to draw), or an ``error`` frame instead.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, NotRequired, Optional, TypedDict

__all__ = ["Frame", "TokenData", "CompleteData", "ErrorData", "token", "complete", "error"]


class TokenData(TypedDict):
    token: str
    index: int


class CompleteData(TypedDict):
    tokens: int
    sql: NotRequired[str]
    chartConfig: NotRequired[Dict[str, Any]]


class ErrorData(TypedDict):
    message: str
    code: NotRequired[str]
    index: NotRequired[int]


class Frame(TypedDict):
    type: str
    data: Any


def token(text: str, index: int) -> Frame:
    """A ``{"type": "token", "data": {"token": text, "index": index}}`` frame."""
    if not isinstance(text, str):
        raise TypeError("token: text must be str")
    _check_index(index)
    return {"type": "token", "data": TokenData(token=text, index=index)}


def complete(tokens: int, *, sql: Optional[str] = None, chart_config: Optional[Mapping[str, Any]] = None) -> Frame:
    """The frame that ends a stream: ``{"type": "complete", "data": {"tokens": N, "sql"?, "chartConfig"?}}``."""
    _check_index(tokens, "tokens")
    data: CompleteData = {"tokens": tokens}
    if sql is not None:
        data["sql"] = sql
    if chart_config is not None:
        data["chartConfig"] = dict(chart_config)
    return {"type": "complete", "data": data}


def error(message: str, *, code: Optional[str] = None, index: Optional[int] = None) -> Frame:
    """The frame that ends a failed stream: ``{"type": "error", "data": {"message", "code"?, "index"?}}``.

    ``index`` is the index of the first token that was not sent, when the
    stream broke mid-way.
    """
    if not isinstance(message, str):
        raise TypeError("error: message must be str")
    data: ErrorData = {"message": message}
    if code is not None:
        data["code"] = code
    if index is not None:
        _check_index(index)
        data["index"] = index
    return {"type": "error", "data": data}


def _check_index(n: Any, name: str = "index") -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{name} must be a non-negative int")

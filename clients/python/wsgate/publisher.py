"""Publishers: put messages on wsgate's channels, durable ones included.

Two transports:

* ``redis_url=`` (or ``redis=`` a ready client): the message goes straight to
  Redis. On a durable channel the publisher runs wsgate's own Lua script
  (``publish.lua``, a byte-equal copy of ``bridge/publish.lua``), so the
  message is recorded in the channel's history and clients can resume over
  it; on other channels it is a plain ``PUBLISH``.
* ``admin_url=``: ``POST /publish`` on wsgate's admin listener. wsgate's own
  route config then decides whether the channel is durable; ``token=`` is sent
  as ``Authorization: Bearer <token>``.

Payloads: ``bytes`` go as they are, ``str`` as UTF-8, anything else as compact
JSON (so a frame from :mod:`wsgate.frames` arrives as ``{"type":...}``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Any, Mapping, Optional, Union
from urllib.parse import quote

__all__ = ["History", "Publisher", "AsyncPublisher", "PublishError", "PUBLISH_SCRIPT", "encode", "history_keys"]

#: wsgate's durable publish script, byte for byte.
PUBLISH_SCRIPT: str = resources.files(__package__).joinpath("publish.lua").read_text(encoding="utf-8")

# Prefixes the Pub/Sub payload of a recorded message (bridge/history.go).
_DURABLE_MARKER = "\x1ewsgate1 "

DEFAULT_HISTORY_SIZE = 1000
DEFAULT_HISTORY_TTL = 600.0


@dataclass(frozen=True)
class History:
    """How much history a durable channel keeps: set it to the route's
    ``history: {size, ttl}`` in wsgate's config. Both publish paths trim the
    same stream, so a smaller value here trims what wsgate would have kept.
    """

    #: Messages kept per channel. wsgate's default is 1000.
    size: int = DEFAULT_HISTORY_SIZE
    #: Seconds the history outlives the channel's last message. wsgate's default is 600 (10m).
    ttl: float = DEFAULT_HISTORY_TTL

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError("History.size must be a positive int")
        if not self.ttl >= 0.001:
            raise ValueError("History.ttl must be at least 0.001 seconds")


Durable = Union[None, bool, History]


class PublishError(Exception):
    """A publish that did not happen. ``status`` is the admin endpoint's HTTP
    status (503: Redis is down behind wsgate), or None for a Redis error,
    which is chained as ``__cause__``. Retrying is safe only if a duplicate
    message is acceptable: a timeout can hide a publish that succeeded.
    """

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


def encode(data: Any) -> bytes:
    """The bytes a payload is published as."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode("utf-8")
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def history_keys(channel: str) -> list[str]:
    """The keys of a durable channel's history; ``{channel}`` is the Cluster hash tag."""
    tag = "{" + channel + "}"
    return ["wsgate:history:" + tag, "wsgate:epoch:" + tag, "wsgate:trimmed:" + tag]


def glob_match(pattern: str, channel: str) -> bool:
    """wsgate's channel pattern match: ``:``-separated segments, where a ``*``
    segment stands for any one non-empty segment."""
    ps, cs = pattern.split(":"), channel.split(":")
    return len(ps) == len(cs) and all(p == c or (p == "*" and c != "") for p, c in zip(ps, cs))


class _Config:
    """What both publishers share: transport choice, validation, encoding."""

    def __init__(
        self,
        redis_url: Optional[str],
        redis: Any,
        admin_url: Optional[str],
        token: Optional[str],
        durable: Optional[Mapping[str, History]],
        timeout: float,
    ) -> None:
        if sum(x is not None for x in (redis_url, redis, admin_url)) != 1:
            raise ValueError("Publisher: pass exactly one of redis_url=, redis= or admin_url=")
        if token is not None and admin_url is None:
            raise ValueError("Publisher: token= is for admin_url= (POST /publish)")
        if token is not None and (not isinstance(token, str) or token == "" or any(c in token for c in "\r\n")):
            raise ValueError("Publisher: token must be a non-empty str without line breaks")
        if admin_url is not None and not admin_url.startswith(("http://", "https://")):
            raise ValueError("Publisher: admin_url must be an http:// or https:// URL")
        if not timeout > 0:
            raise ValueError("Publisher: timeout must be positive")
        self.durable = dict(durable or {})
        for pattern, h in self.durable.items():
            if not isinstance(h, History):
                raise TypeError(f"Publisher: durable[{pattern!r}] must be a History")
        self.admin_url = admin_url.rstrip("/") if admin_url else None
        self.headers = {"Authorization": "Bearer " + token} if token else {}
        self.timeout = timeout

    def history_for(self, channel: str, durable: Durable) -> Optional[History]:
        if not isinstance(channel, str) or channel == "":
            raise ValueError("publish: channel must be a non-empty str")
        if durable is None:
            return next((h for p, h in self.durable.items() if glob_match(p, channel)), None)
        if durable is True:
            return History()
        if durable is False:
            return None
        if isinstance(durable, History):
            return durable
        raise TypeError("publish: durable must be None, a bool or a History")

    def script_args(self, channel: str, payload: bytes, h: History) -> list[Any]:
        return [channel, payload, h.size, max(1, round(h.ttl * 1000)), secrets.token_hex(6), _DURABLE_MARKER]

    def admin_request(self, channel: str, payload: bytes) -> tuple[str, dict[str, str]]:
        url = f"{self.admin_url}/publish?channel={quote(channel, safe='')}"
        return url, {**self.headers, "Content-Type": "application/octet-stream"}


def _admin_error(status: int, body: str) -> PublishError:
    # The body is wsgate's own plain-text error; it never echoes the token.
    return PublishError(f"wsgate publish: HTTP {status}: {body.strip()[:200]}", status)


class Publisher:
    """Publishes to wsgate channels from synchronous code.

    ``durable`` maps channel patterns to their History, mirroring the durable
    routes in wsgate's config (``{"ai:stream:*": History(1000, 600)}``), so
    ``publish`` records those channels without being told each time.

    Thread-safe (redis-py and httpx clients are). ``close()`` (or ``with``)
    closes the connections it opened, never a client passed as ``redis=``.
    """

    def __init__(
        self,
        redis_url: Optional[str] = None,
        *,
        redis: Any = None,
        admin_url: Optional[str] = None,
        token: Optional[str] = None,
        durable: Optional[Mapping[str, History]] = None,
        timeout: float = 5.0,
    ) -> None:
        self._cfg = _Config(redis_url, redis, admin_url, token, durable, timeout)
        self._owned = redis is None
        self._redis = None
        self._http = None
        if admin_url is not None:
            import httpx

            self._http = httpx.Client(timeout=timeout)
        else:
            if redis is None:
                import redis as redis_py

                redis = redis_py.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
            self._redis = redis
            self._script = redis.register_script(PUBLISH_SCRIPT)

    def publish(self, channel: str, data: Any, *, durable: Durable = None) -> None:
        """Publishes data to channel. ``durable``: None (default) follows the
        patterns given to the constructor, True uses wsgate's default History,
        a History sets it, False sends a plain PUBLISH (clients cannot resume
        over it). Ignored with ``admin_url``: wsgate's config decides.
        Raises PublishError when the message was not published.
        """
        h = self._cfg.history_for(channel, durable)
        payload = encode(data)
        if self._http is not None:
            url, headers = self._cfg.admin_request(channel, payload)
            try:
                res = self._http.post(url, content=payload, headers=headers)
            except Exception as err:  # httpx.HTTPError and OS errors
                raise PublishError(f"wsgate publish: {type(err).__name__}: {err}") from err
            if res.status_code != 204:
                raise _admin_error(res.status_code, res.text)
            return
        try:
            if h is None:
                self._redis.publish(channel, payload)
            else:
                self._script(keys=history_keys(channel), args=self._cfg.script_args(channel, payload, h))
        except Exception as err:  # redis.RedisError and OS errors
            raise PublishError(f"wsgate publish: redis: {type(err).__name__}: {err}") from err

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._redis is not None and self._owned:
            self._redis.close()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:  # no URL: it may carry a password
        return f"<wsgate.Publisher via {'admin' if self._http is not None else 'redis'}>"


class AsyncPublisher:
    """Publisher for asyncio code (redis.asyncio, httpx.AsyncClient); same
    arguments and behaviour. ``await aclose()`` (or ``async with``) closes what
    it opened.
    """

    def __init__(
        self,
        redis_url: Optional[str] = None,
        *,
        redis: Any = None,
        admin_url: Optional[str] = None,
        token: Optional[str] = None,
        durable: Optional[Mapping[str, History]] = None,
        timeout: float = 5.0,
    ) -> None:
        self._cfg = _Config(redis_url, redis, admin_url, token, durable, timeout)
        self._owned = redis is None
        self._redis = None
        self._http = None
        if admin_url is not None:
            import httpx

            self._http = httpx.AsyncClient(timeout=timeout)
        else:
            if redis is None:
                import redis.asyncio as redis_py

                redis = redis_py.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
            self._redis = redis
            self._script = redis.register_script(PUBLISH_SCRIPT)

    async def publish(self, channel: str, data: Any, *, durable: Durable = None) -> None:
        """See Publisher.publish."""
        h = self._cfg.history_for(channel, durable)
        payload = encode(data)
        if self._http is not None:
            url, headers = self._cfg.admin_request(channel, payload)
            try:
                res = await self._http.post(url, content=payload, headers=headers)
            except Exception as err:
                raise PublishError(f"wsgate publish: {type(err).__name__}: {err}") from err
            if res.status_code != 204:
                raise _admin_error(res.status_code, res.text)
            return
        try:
            if h is None:
                await self._redis.publish(channel, payload)
            else:
                await self._script(keys=history_keys(channel), args=self._cfg.script_args(channel, payload, h))
        except Exception as err:
            raise PublishError(f"wsgate publish: redis: {type(err).__name__}: {err}") from err

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._redis is not None and self._owned:
            await self._redis.close()

    async def __aenter__(self) -> "AsyncPublisher":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<wsgate.AsyncPublisher via {'admin' if self._http is not None else 'redis'}>"

"""A FastAPI dependency that says who wsgate let through.

    from fastapi import Depends, FastAPI, WebSocket
    from wsgate import Identity
    from wsgate.fastapi import WsgateIdentity

    identity = WsgateIdentity.from_env()   # or WsgateIdentity(AssertionVerifier(...))
    app = FastAPI()

    @app.websocket("/ws/chat")
    async def chat(ws: WebSocket, who: Identity = Depends(identity)):
        ...

**Trust assumption without a verifier.** ``x-user-id`` and ``x-tenant-id``
are plain headers: wsgate sets them after verifying the browser's token (and
removes any the browser sent), but any process that can reach this service
directly can set them too. Header mode is only sound when wsgate is the sole
way in: the service listens on 127.0.0.1 inside wsgate's pod (the sidecar
pattern) or a NetworkPolicy admits only wsgate. Configure a verifier
(``WSGATE_JWKS_URL``) and the signed ``X-Wsgate-Assertion`` is required
instead, which holds on any network.
"""

# No `from __future__ import annotations`: FastAPI reads __call__'s annotations
# at runtime and a callable instance has no __globals__ to resolve them in.

import os
from typing import Optional

from fastapi import HTTPException
from starlette.exceptions import WebSocketException
from starlette.requests import HTTPConnection

from .identity import ASSERTION_HEADER, AssertionVerifier, Identity, InvalidAssertion

__all__ = ["WsgateIdentity"]

# Sent to an HTTP caller that fails: the reason, never the assertion.
_WWW_AUTHENTICATE = 'WsgateAssertion realm="wsgate"'


class WsgateIdentity:
    """Callable dependency returning the caller's :class:`Identity`.

    Without ``verifier``: the user comes from ``x-user-id`` (required) and the
    tenant from ``x-tenant-id`` (optional); see the trust assumption above.
    With ``verifier``: ``X-Wsgate-Assertion`` is required and verified, and
    when ``x-user-id``/``x-tenant-id`` are also present they must agree with
    it. Failures answer HTTP 401, or close a WebSocket handshake with 1008
    (the ASGI server then answers the upgrade with 403).

    It is a sync dependency, so FastAPI runs it in a worker thread: the
    occasional JWKS fetch never blocks the event loop.
    """

    def __init__(
        self,
        verifier: Optional[AssertionVerifier] = None,
        *,
        user_header: str = "x-user-id",
        tenant_header: str = "x-tenant-id",
    ) -> None:
        self.verifier = verifier
        self.user_header = user_header
        self.tenant_header = tenant_header

    @classmethod
    def from_env(cls) -> "WsgateIdentity":
        """A verifier from WSGATE_JWKS_URL, WSGATE_ASSERTION_AUDIENCE (comma
        separated) and WSGATE_ASSERTION_ISSUER (default ``wsgate``) when
        WSGATE_JWKS_URL is set; header mode otherwise."""
        url = os.environ.get("WSGATE_JWKS_URL", "")
        if not url:
            return cls()
        audience = [a.strip() for a in os.environ.get("WSGATE_ASSERTION_AUDIENCE", "").split(",") if a.strip()]
        if not audience:
            raise ValueError("WSGATE_JWKS_URL is set: WSGATE_ASSERTION_AUDIENCE must name this service's origin")
        return cls(AssertionVerifier(url, audience, issuer=os.environ.get("WSGATE_ASSERTION_ISSUER", "wsgate")))

    def __call__(self, conn: HTTPConnection) -> Identity:
        try:
            return self.identify(conn.headers)
        except InvalidAssertion as err:
            if conn.scope["type"] == "websocket":
                raise WebSocketException(code=1008, reason=str(err)[:120]) from None
            raise HTTPException(401, detail=str(err), headers={"WWW-Authenticate": _WWW_AUTHENTICATE}) from None

    def identify(self, headers) -> Identity:
        """The identity in a header mapping (case-insensitive get), or InvalidAssertion."""
        user = headers.get(self.user_header) or None
        tenant = headers.get(self.tenant_header) or None
        if self.verifier is None:
            if user is None:
                raise InvalidAssertion("missing", f"no {self.user_header} header: is this service reachable only through wsgate?")
            return Identity(user=user, tenant=tenant)
        who = self.verifier.verify(headers.get(ASSERTION_HEADER))
        if (user is not None and user != who.user) or (tenant is not None and tenant != who.tenant):
            raise InvalidAssertion("mismatch", "identity headers disagree with the assertion")
        return who

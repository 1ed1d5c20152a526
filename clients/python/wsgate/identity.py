"""Who is on the other end of a socket wsgate dialled.

wsgate verifies the browser's JWT, then dials the upstream service with
``x-user-id`` and ``x-tenant-id`` headers. Those headers are only as
trustworthy as the network path: anyone who can reach the service directly
can set them. :class:`AssertionVerifier` removes that assumption: wsgate can
also send ``X-Wsgate-Assertion``, a short-lived JWT it signs (ES256 or EdDSA)
with keys it publishes at ``/.well-known/jwks.json`` on its admin listener.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional

__all__ = ["Identity", "InvalidAssertion", "AssertionVerifier", "ASSERTION_HEADER"]

#: The header wsgate carries its signed identity assertion in.
ASSERTION_HEADER = "x-wsgate-assertion"


@dataclass(frozen=True)
class Identity:
    """The caller as wsgate established it."""

    #: The verified user id (the token's user claim, by default ``sub``).
    user: str
    #: The tenant id, or None when the token had none.
    tenant: Optional[str] = None
    #: True when it came from a verified X-Wsgate-Assertion, False when from plain headers.
    verified: bool = False
    #: The assertion's claims (empty without one).
    claims: Mapping[str, Any] = field(default_factory=dict)


class InvalidAssertion(Exception):
    """The assertion (or the identity headers) cannot be trusted. ``reason``
    is one of: missing, malformed, unknown_key, bad_signature, expired,
    wrong_issuer, wrong_audience, replayed, mismatch, jwks_unavailable.
    The message never contains the assertion itself.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"wsgate assertion: {reason}" + (f": {detail}" if detail else ""))
        self.reason = reason


class AssertionVerifier:
    """Verifies X-Wsgate-Assertion JWTs against wsgate's JWKS.

    ``audience`` is this service's origin as wsgate dials it (for upstream
    ``ws://ai-service:8000/ws/chat``, ``ws://ai-service:8000``; pass several
    if it is dialled under several names). ``issuer`` defaults to ``wsgate``.
    Only ``algorithms`` (ES256, EdDSA) are accepted, whatever a token's header
    says; ``exp``, ``sub``, ``iss``, ``aud`` and ``jti`` are
    required (``iat`` is not).

    Keys are fetched from ``jwks_url`` on first use, refreshed every
    ``refresh`` seconds, and refetched early when a token names an unknown
    ``kid`` (at most once per ``min_refetch`` seconds, so bad tokens cannot
    make it hammer wsgate). A key set that cannot be refreshed is kept
    (wsgate rotates with overlap); without any keys every assertion is
    refused (``jwks_unavailable``) and the fetch is retried after
    ``min_refetch``.

    With ``reject_replays`` (default), each ``jti`` is accepted once while
    its token is unexpired (wsgate mints one per upstream dial). The memory
    is per process: several workers each accept a token once.

    ``now`` is the clock for key refresh and replay bookkeeping (PyJWT
    checks ``exp`` against the wall clock).

    Thread-safe; ``verify`` blocks on network I/O only when it (re)fetches
    keys, so call it from a thread in async code (a sync FastAPI dependency
    does that).
    """

    def __init__(
        self,
        jwks_url: str,
        audience: str | Iterable[str],
        *,
        issuer: str = "wsgate",
        algorithms: Iterable[str] = ("ES256", "EdDSA"),
        leeway: float = 5.0,
        refresh: float = 300.0,
        min_refetch: float = 10.0,
        timeout: float = 5.0,
        reject_replays: bool = True,
        max_replay_entries: int = 100_000,
        now: Callable[[], float] = time.time,
    ) -> None:
        import jwt  # PyJWT with cryptography (Debian: python3-jwt)

        if not jwks_url.startswith(("http://", "https://")):
            raise ValueError("AssertionVerifier: jwks_url must be an http:// or https:// URL")
        self._jwt = jwt
        self._jwks_url = jwks_url
        self._audience = [audience] if isinstance(audience, str) else list(audience)
        if not self._audience or not all(isinstance(a, str) and a for a in self._audience):
            raise ValueError("AssertionVerifier: audience must be one or more non-empty strings")
        self._issuer = issuer
        self._algorithms = list(algorithms)
        unsafe = [a for a in self._algorithms if a not in ("ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256")]
        if unsafe or not self._algorithms:
            raise ValueError(f"AssertionVerifier: algorithms must be asymmetric, not {unsafe}")
        self._leeway = leeway
        self._refresh = refresh
        self._min_refetch = min_refetch
        self._timeout = timeout
        self._reject_replays = reject_replays
        self._max_replay_entries = max_replay_entries
        self._now = now

        # Guarded by _lock.
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[str, Any]] = {}  # kid -> (alg, jwt.PyJWK)
        self._fetched_at = float("-inf")
        self._fetch_error = ""
        self._seen: OrderedDict[str, float] = OrderedDict()  # jti -> exp

    def verify(self, assertion: Optional[str]) -> Identity:
        """Returns the asserted identity or raises InvalidAssertion."""
        jwt = self._jwt
        if not assertion:
            raise InvalidAssertion("missing")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise InvalidAssertion("malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self._algorithms:
            raise InvalidAssertion("malformed", f"algorithm {str(alg)[:16]!r} is not accepted")
        key = self._key(kid if isinstance(kid, str) else None, alg)
        try:
            claims = jwt.decode(
                assertion,
                key.key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub", "iss", "aud", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidAssertion("expired") from None
        except jwt.InvalidAudienceError:
            raise InvalidAssertion("wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidAssertion("wrong_issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidAssertion("bad_signature") from None
        except jwt.PyJWTError as err:
            raise InvalidAssertion("malformed", type(err).__name__) from None
        sub, tenant, jti = claims["sub"], claims.get("tenant_id"), claims["jti"]
        if not isinstance(sub, str) or not sub or not isinstance(jti, str) or not jti:
            raise InvalidAssertion("malformed", "sub and jti must be non-empty strings")
        if tenant is not None and not isinstance(tenant, str):
            raise InvalidAssertion("malformed", "tenant_id must be a string")
        if self._reject_replays:
            self._remember(jti, float(claims["exp"]))
        return Identity(user=sub, tenant=tenant or None, verified=True, claims=claims)

    def _key(self, kid: Optional[str], alg: str) -> Any:
        with self._lock:
            now = self._now()
            age = now - self._fetched_at
            # No keys yet (or a failed first fetch): try again after
            # min_refetch, not after a whole refresh interval.
            if age >= self._refresh or (not self._keys and age >= self._min_refetch):
                self._fetch(now)
            if not self._keys:
                raise InvalidAssertion("jwks_unavailable", self._fetch_error)
            key = self._pick(kid, alg)
            if key is None and now - self._fetched_at >= self._min_refetch:
                self._fetch(now)
                key = self._pick(kid, alg)
        if key is None:
            raise InvalidAssertion("unknown_key")
        return key

    def _pick(self, kid: Optional[str], alg: str) -> Any:
        if kid is not None:
            entry = self._keys.get(kid)
        elif len(self._keys) == 1:  # a set of one key may omit kid
            entry = next(iter(self._keys.values()))
        else:
            entry = None
        # The key's algorithm must be the token's: an EC key never verifies
        # an EdDSA token, whatever the token's header claims.
        if entry is None or entry[0] != alg:
            return None
        return entry[1]

    def _fetch(self, now: float) -> None:
        # Called with _lock held: concurrent verifiers wait for one fetch. A
        # failure keeps the previous keys (wsgate rotates with overlap).
        self._fetched_at = now
        try:
            req = urllib.request.Request(self._jwks_url, headers={"Accept": "application/json"})
            with urllib.request.urlopen(req, timeout=self._timeout) as res:  # noqa: S310 (URL checked in __init__)
                body = json.loads(res.read(1 << 20))
            keys = {}
            for jwk in body.get("keys", []):
                if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                    continue
                alg = _jwk_algorithm(jwk)
                if alg not in self._algorithms:
                    continue  # symmetric, or a type this verifier does not accept
                try:
                    keys[jwk.get("kid") or ""] = (alg, self._jwt.PyJWK(jwk, alg))
                except self._jwt.PyJWTError:
                    continue  # a key this library cannot use; others may still do
        except (OSError, ValueError, AttributeError) as err:
            self._fetch_error = f"fetch failed: {type(err).__name__}"
            return
        if not keys:
            self._fetch_error = "no usable keys"
            return
        self._keys, self._fetch_error = keys, ""

    def _remember(self, jti: str, exp: float) -> None:
        now = self._now()
        with self._lock:
            while self._seen:
                oldest_jti, oldest_exp = next(iter(self._seen.items()))
                if oldest_exp + self._leeway >= now and len(self._seen) < self._max_replay_entries:
                    break
                self._seen.popitem(last=False)
            if jti in self._seen:
                raise InvalidAssertion("replayed")
            self._seen[jti] = exp


_CURVE_ALGORITHMS = {("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("EC", "P-521"): "ES512", ("OKP", "Ed25519"): "EdDSA"}


def _jwk_algorithm(jwk: Mapping[str, Any]) -> Optional[str]:
    """The JWS algorithm a JWK verifies: its alg, else the one its curve implies."""
    if isinstance(jwk.get("alg"), str):
        return jwk["alg"]
    if jwk.get("kty") == "RSA":
        return "RS256"
    return _CURVE_ALGORITHMS.get((jwk.get("kty"), jwk.get("crv")))

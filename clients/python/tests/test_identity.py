"""X-Wsgate-Assertion verification with keys this test makes (ES256 and
Ed25519), served as a JWKS by a loopback HTTP server; then the FastAPI
dependency in the example service under uvicorn."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import secrets
import threading
import time
import urllib.request

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import OKPAlgorithm

from conftest import start_service, stop
from wsgate import AssertionVerifier, Identity, InvalidAssertion

AUD = "ws://127.0.0.1:8000"


def ec_jwk(public: ec.EllipticCurvePublicKey) -> dict:
    # RFC 7518 6.2.1.2: x and y are the full 32 bytes for P-256. PyJWT 2.6's
    # ECAlgorithm.to_jwk drops leading zero bytes (about one key in a
    # hundred), and then its own PyJWK refuses the key; wsgate's JWKS (jwx)
    # pads, so the test serves keys as wsgate does.
    n = public.public_numbers()
    b64 = lambda i: base64.urlsafe_b64encode(i.to_bytes(32, "big")).rstrip(b"=").decode()  # noqa: E731
    return {"kty": "EC", "crv": "P-256", "x": b64(n.x), "y": b64(n.y)}


class Key:
    def __init__(self, kid: str, alg: str):
        self.kid, self.alg = kid, alg
        if alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = ec_jwk(self.private.public_key())
        else:
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update(kid=kid, use="sig")

    def sign(self, **overrides) -> str:
        now = int(time.time())
        claims = {"iss": "wsgate", "aud": AUD, "sub": "alice", "tenant_id": "acme", "exp": now + 60,
                  "iat": now, "jti": secrets.token_hex(8)}
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid})


class JWKS(http.server.BaseHTTPRequestHandler):
    keys: list = []
    hits = 0
    fail = False

    def do_GET(self):
        JWKS.hits += 1
        if JWKS.fail or self.path != "/.well-known/jwks.json":
            self.send_error(503 if JWKS.fail else 404)
            return
        body = json.dumps({"keys": [k.jwk for k in JWKS.keys]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def keys():
    return {"ec": Key("ec-1", "ES256"), "ed": Key("ed-1", "EdDSA")}


@pytest.fixture()
def jwks(keys):
    JWKS.keys, JWKS.hits, JWKS.fail = [keys["ec"], keys["ed"]], 0, False
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), JWKS)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/.well-known/jwks.json"
    srv.shutdown()
    srv.server_close()
    t.join()


class Clock:
    def __init__(self):
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("which", ["ec", "ed"])
def test_a_valid_assertion_gives_the_identity(jwks, keys, which):
    v = AssertionVerifier(jwks, AUD)
    who = v.verify(keys[which].sign(sub="bob", tenant_id="t9"))
    assert (who.user, who.tenant, who.verified) == ("bob", "t9", True)
    assert who.claims["iss"] == "wsgate"


def forge_hs256(keys) -> str:
    # The classic confusion: HMAC "signed" with the public key's bytes.
    return jwt.encode({"sub": "alice", "iss": "wsgate", "aud": AUD, "exp": int(time.time()) + 60, "jti": "x"},
                      "public-key-bytes-as-an-hmac-secret-0123456789", algorithm="HS256", headers={"kid": "ec-1"})


def forge_none() -> str:
    return jwt.encode({"sub": "alice", "iss": "wsgate", "aud": AUD, "exp": int(time.time()) + 60, "jti": "x"},
                      None, algorithm="none", headers={"kid": "ec-1"})


def tamper(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(body))
    claims["sub"] = "admin"
    return ".".join([head, jwt.utils.base64url_encode(json.dumps(claims).encode()).decode(), sig])


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda k: None, "missing"),
        (lambda k: "", "missing"),
        (lambda k: "not-a-jwt", "malformed"),
        (lambda k: k["ec"].sign(exp=int(time.time()) - 60), "expired"),
        (lambda k: k["ec"].sign(aud="ws://other:8000"), "wrong_audience"),
        (lambda k: k["ec"].sign(iss="someone-else"), "wrong_issuer"),
        (lambda k: k["ed"].sign(jti=None), "malformed"),
        (lambda k: k["ed"].sign(sub=None), "malformed"),
        (lambda k: k["ed"].sign(exp=None), "malformed"),
        (lambda k: forge_hs256(k), "malformed"),
        (lambda k: forge_none(), "malformed"),
        (lambda k: tamper(k["ec"].sign()), "bad_signature"),
        (lambda k: Key("ec-1", "ES256").sign(), "bad_signature"),  # right kid, another key
        (lambda k: Key("ec-1", "EdDSA").sign(), "unknown_key"),  # an EdDSA token naming the EC key
        (lambda k: Key("nobody", "ES256").sign(), "unknown_key"),
    ],
)
def test_bad_assertions_are_refused_with_a_reason(jwks, keys, make, reason):
    token = make(keys)
    with pytest.raises(InvalidAssertion) as err:
        AssertionVerifier(jwks, AUD).verify(token)
    assert err.value.reason == reason
    if token:
        assert token not in str(err.value)


def test_each_jti_is_accepted_once(jwks, keys):
    v = AssertionVerifier(jwks, AUD)
    token = keys["ec"].sign()
    v.verify(token)
    with pytest.raises(InvalidAssertion) as err:
        v.verify(token)
    assert err.value.reason == "replayed"
    assert AssertionVerifier(jwks, AUD, reject_replays=False).verify(token).user == "alice"


def test_keys_are_cached_and_an_unknown_kid_refetches_at_most_once_per_interval(jwks, keys):
    clock = Clock()
    v = AssertionVerifier(jwks, AUD, refresh=300, min_refetch=10, now=clock)
    for _ in range(3):
        v.verify(keys["ec"].sign())
    assert JWKS.hits == 1
    stranger = Key("rotated-in", "EdDSA")
    for _ in range(5):  # a flood of unknown kids costs one fetch
        with pytest.raises(InvalidAssertion, match="unknown_key"):
            v.verify(stranger.sign())
    assert JWKS.hits == 1  # fetched less than min_refetch ago
    JWKS.keys = JWKS.keys + [stranger]  # wsgate rotates a key in
    clock.t += 11
    assert v.verify(stranger.sign()).verified
    assert JWKS.hits == 2


def test_a_refresh_failure_keeps_the_last_keys_and_a_failed_first_fetch_fails_closed_then_retries(jwks, keys):
    clock = Clock()
    v = AssertionVerifier(jwks, AUD, refresh=300, now=clock)
    v.verify(keys["ed"].sign())
    JWKS.fail = True
    clock.t += 301
    assert v.verify(keys["ed"].sign()).user == "alice"  # stale but usable
    cold = AssertionVerifier(jwks, AUD, min_refetch=10, now=clock)
    with pytest.raises(InvalidAssertion) as err:
        cold.verify(keys["ed"].sign())
    assert err.value.reason == "jwks_unavailable"
    hits = JWKS.hits
    JWKS.fail = False
    with pytest.raises(InvalidAssertion, match="jwks_unavailable"):
        cold.verify(keys["ed"].sign())  # within min_refetch: no new fetch
    assert JWKS.hits == hits
    clock.t += 10
    assert cold.verify(keys["ed"].sign()).verified  # wsgate is back: so is verification


def test_symmetric_algorithms_cannot_be_configured(jwks):
    with pytest.raises(ValueError, match="asymmetric"):
        AssertionVerifier(jwks, AUD, algorithms=["HS256"])


# The dependency in the example service (a real uvicorn process).


@pytest.fixture()
def verified_service(jwks, redis_url, tmp_path):
    svc = start_service(tmp_path, {"WSGATE_REDIS_URL": redis_url, "WSGATE_JWKS_URL": jwks,
                                   "WSGATE_ASSERTION_AUDIENCE": AUD})
    yield svc
    stop(svc.proc)


def test_the_fastapi_dependency_requires_and_verifies_the_assertion(verified_service, keys):
    base = f"ws://127.0.0.1:{verified_service.port}/ws/chat"

    async def main():
        async with websockets.connect(base, extra_headers={"X-Wsgate-Assertion": keys["ed"].sign(sub="carol")}) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert hello == {"type": "hello", "data": {"user": "carol", "tenant": "acme", "verified": True}}
        for headers in [
            {"x-user-id": "alice", "x-tenant-id": "acme"},  # headers alone no longer count
            {"X-Wsgate-Assertion": keys["ec"].sign(aud="ws://elsewhere")},
            {"X-Wsgate-Assertion": keys["ec"].sign(sub="carol"), "x-user-id": "mallory"},  # disagrees
        ]:
            with pytest.raises(websockets.InvalidStatusCode) as err:
                async with websockets.connect(base, extra_headers=headers):
                    pass
            assert err.value.status_code == 403

    asyncio.run(main())

    req = urllib.request.Request(
        f"http://127.0.0.1:{verified_service.port}/sessions/s1/ask", data=b"hi", method="POST",
        headers={"Content-Type": "text/plain", "X-Wsgate-Assertion": keys["ec"].sign(exp=int(time.time()) - 60)},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 401
    assert err.value.headers["WWW-Authenticate"] == 'WsgateAssertion realm="wsgate"'
    assert json.loads(err.value.read()) == {"detail": "wsgate assertion: expired"}


def test_identity_is_a_plain_value():
    assert Identity("u") == Identity(user="u", tenant=None, verified=False, claims={})

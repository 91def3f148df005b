"""The token verifier, the permissions and the Origin policy (gateway/auth.py), without a
gateway: HS256 with a shared secret, RS256/ES256 from a JWKS served on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gw_redis
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import (
    FORBIDDEN,
    MAX_TOKEN_TRIPS,
    TRY_AGAIN_LATER,
    UNAUTHENTICATED,
    AuthError,
    Claims,
    OriginPolicy,
    TokenVerifier,
    mint_token,
    origin_problem,
)
from gateway.server import request_token

SECRET = "unit-test-hs256-secret-0123456789abcdef"
NOW = time.time()


def payload(**overrides: Any) -> dict[str, Any]:
    base = {"sub": "driver-7", "role": "driver", "trips": ["T1", "T2"], "exp": int(NOW) + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(claims: dict[str, Any], key: str = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm="HS256", headers=headers or None)


def hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def refused(verifier: TokenVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        verifier.verify(token)
    return info.value


# ------------------------------------------------------------------------- HS256


def test_a_valid_token_gives_its_claims() -> None:
    claims = TokenVerifier(secret=SECRET).verify(hs256(payload()))
    assert claims == Claims("driver-7", "driver", frozenset({"T1", "T2"}), int(NOW) + 600)


def test_mint_token_round_trips_through_the_verifier() -> None:
    token = mint_token(
        SECRET, sub="r-1", role="rider", trips=["T9"], ttl=60, issuer="i", audience="a"
    )
    claims = TokenVerifier(secret=SECRET, issuer="i", audience="a").verify(token)
    assert (claims.sub, claims.role, claims.trips) == ("r-1", "rider", frozenset({"T9"}))
    assert NOW + 50 < (claims.expires_at or 0) <= time.time() + 60


BAD_TOKENS = [
    pytest.param(hs256(payload(exp=int(NOW) - 120)), "token expired", id="expired"),
    pytest.param(hs256(payload(nbf=int(NOW) + 600)), "token not yet valid", id="not-yet"),
    pytest.param(
        hs256(payload(), key="another-key-of-32-bytes-or-more!!"), "bad signature", id="other-key"
    ),
    pytest.param(hs256(payload(exp=None)), "invalid token: no exp claim", id="no-exp"),
    pytest.param(hs256(payload(sub=None)), "invalid token: no sub claim", id="no-sub"),
    pytest.param(hs256(payload(sub="")), "sub must be 1-128 chars", id="empty-sub"),
    pytest.param(hs256(payload(role="admin")), "role must be rider, driver or ops", id="role"),
    pytest.param(hs256(payload(role=None)), "role must be rider, driver or ops", id="no-role"),
    pytest.param(hs256(payload(trips="T1")), "trips must be a list", id="trips-string"),
    pytest.param(hs256(payload(trips=None)), "trips must be a list", id="no-trips"),
    pytest.param(hs256(payload(trips=["{T1}"])), "invalid trip id", id="trip-hash-tag"),
    pytest.param(hs256(payload(trips=[7])), "invalid trip id", id="trip-number"),
    pytest.param(
        hs256(payload(trips=[f"T{i}" for i in range(MAX_TOKEN_TRIPS + 1)])),
        "at most 100",
        id="too-many-trips",
    ),
    pytest.param(hs256(payload(aud="someone")), "wrong audience", id="unexpected-aud"),
    pytest.param(
        jwt.encode(payload(), SECRET * 2, algorithm="HS512"),
        "algorithm HS512 not accepted",
        id="hs512",
    ),
    pytest.param(
        jwt.encode(payload(), None, algorithm="none"), "algorithm none not accepted", id="alg-none"
    ),
    pytest.param("not.a.jwt", "invalid token: malformed", id="garbage"),
    pytest.param("", "missing token", id="empty"),
    pytest.param("e" * 9000, "invalid token: too long", id="too-long"),
]


@pytest.mark.parametrize(("token", "reason"), BAD_TOKENS)
def test_bad_tokens_are_refused_with_4401_and_a_reason(token: str, reason: str) -> None:
    error = refused(TokenVerifier(secret=SECRET), token)
    assert error.code == UNAUTHENTICATED
    assert reason in error.reason
    assert SECRET not in error.reason


def test_issuer_and_audience_when_configured() -> None:
    verifier = TokenVerifier(secret=SECRET, issuer="https://id.example", audience="gw")
    good = payload(iss="https://id.example", aud="gw")
    assert verifier.verify(hs256(good)).sub == "driver-7"
    assert "wrong issuer" in refused(verifier, hs256({**good, "iss": "https://evil"})).reason
    assert "wrong audience" in refused(verifier, hs256({**good, "aud": "other"})).reason
    assert "no iss claim" in refused(verifier, hs256(payload(aud="gw"))).reason
    assert "no aud claim" in refused(verifier, hs256(payload(iss="https://id.example"))).reason


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier(secret="short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        mint_token("short", sub="x", role="ops", trips=[])
    with pytest.raises(ValueError, match="needs a secret"):
        TokenVerifier()


# ------------------------------------------------------------------- permissions


def test_permissions_per_role() -> None:
    rider = Claims("r", "rider", frozenset({"T1"}), None)
    driver = Claims("d", "driver", frozenset({"T1"}), None)
    ops = Claims("o", "ops", frozenset(), None)
    anyone = Claims.anyone()
    table = {
        # (subscribe T1, subscribe T2, publish T1, publish T2)
        "rider": (rider, (True, False, False, False)),
        "driver": (driver, (True, False, True, False)),
        "ops": (ops, (True, True, False, False)),
        "disabled": (anyone, (True, True, True, True)),
    }
    for name, (claims, expected) in table.items():
        got = (
            claims.may_subscribe("T1"),
            claims.may_subscribe("T2"),
            claims.may_publish("T1"),
            claims.may_publish("T2"),
        )
        assert got == expected, name
    assert rider.publish_denial("T1") == "forbidden: a rider may not publish locations"
    assert ops.publish_denial("T1") == "forbidden: ops may not publish locations"
    assert driver.publish_denial("T2") == "forbidden: trip 'T2' is not in your token"
    assert rider.subscribe_denial("T2") == "forbidden: trip 'T2' is not in your token"
    assert driver.publish_denial("T1") is None and ops.subscribe_denial("T9") is None


# ------------------------------------------------------------------------ Origin


def test_origin_policy() -> None:
    policy = OriginPolicy(["https://app.example.com", "http://localhost:3000/"])
    assert policy.allows(None)  # native apps and servers send no Origin
    assert policy.allows("https://APP.example.com")
    assert policy.allows("http://localhost:3000")
    assert not policy.allows("https://evil.example")
    assert not policy.allows("https://app.example.com.evil.example")
    assert not policy.allows("null")
    assert not OriginPolicy([]).allows("https://app.example.com")
    assert OriginPolicy(["*"]).allows("https://anything.example")
    assert origin_problem("https://a.example:8443") is None
    assert origin_problem("a.example") is not None
    assert origin_problem("https://a.example/app") is not None
    assert origin_problem("https://a.example:99999") is not None


def test_request_token_sources() -> None:
    assert request_token("/?token=abc", []) == "abc"
    assert request_token("/", ["sikka.v1, bearer.abc"]) == "abc"
    assert request_token("/?client_id=x&token=abc", ["sikka.v1", "bearer.abc"]) == "abc"
    for path, protocols, reason in [
        ("/", [], "missing token"),
        ("/?token=", ["sikka.v1"], "missing token"),
        ("/?token=a", ["bearer.b"], "more than one token"),
        ("/?token=a&token=b", [], "more than one token"),
        ("/?" + "&".join(f"x{i}=1" for i in range(40)), [], "malformed query"),
    ]:
        with pytest.raises(AuthError) as info:
            request_token(path, protocols)
        assert info.value.code == UNAUTHENTICATED
        assert reason in info.value.reason
    assert FORBIDDEN == 4403


# -------------------------------------------------------------------------- JWKS


class Keys:
    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True)
        ec_jwk = ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True)
        return {
            "keys": [
                {**rsa_jwk, "kid": "rsa-1", "alg": "RS256", "use": "sig"},
                {**ec_jwk, "kid": "ec-1", "alg": "ES256", "use": "sig"},
            ]
        }


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[tuple[str, Keys, list[str]]]:
    keys = Keys()
    body = json.dumps(keys.jwks()).encode()
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", keys, hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_rs256_and_es256_tokens_from_a_jwks(jwks_server: tuple[str, Keys, list[str]]) -> None:
    url, keys, hits = jwks_server
    verifier = TokenVerifier(jwks_url=url, audience="gw")
    assert verifier.uses_network
    claims = payload(aud="gw")
    rs = jwt.encode(claims, keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims, keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    assert verifier.verify(rs).trips == frozenset({"T1", "T2"})
    assert verifier.verify(es).role == "driver"
    assert len(hits) == 1  # the key set is fetched once and cached

    # A key the JWKS does not hold, under a known kid or an unknown one.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "rsa-1"})
    assert "bad signature" in refused(verifier, forged).reason
    unknown = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "nope"})
    assert refused(verifier, unknown).reason == "invalid token: unknown signing key"
    # Forged kids do not make the gateway hammer the identity provider: one refetch at
    # most per cooldown.
    for _ in range(5):
        refused(verifier, unknown)
    assert len(hits) <= 2

    # Key confusion: an HS256 token "signed" with the public key is not accepted.
    public_pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    confused = hs256_by_hand(claims, public_pem)  # PyJWT itself refuses to sign this
    assert refused(verifier, confused).reason == "invalid token: algorithm HS256 not accepted"


def test_unreachable_jwks_asks_the_client_to_retry() -> None:
    url = f"http://127.0.0.1:{gw_redis.free_port()}/jwks.json"  # nothing listens
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(payload(), key, algorithm="RS256", headers={"kid": "k"})
    error = refused(TokenVerifier(jwks_url=url), token)
    assert (error.code, error.reason) == (TRY_AGAIN_LATER, "cannot fetch signing keys, try again")

"""The scaling API's token checks, with real signed tokens: HS256, and RS256/ES256 from a
JWKS served by a local HTTP server whose key is rotated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support.api import AUDIENCE, SECRET, hs_verifier, none_token, token

from scaling.api.auth import (
    AuthSettings,
    KeySourceError,
    TokenRejected,
    Verifier,
    mint,
    settings_from_env,
)


def test_a_valid_token_names_its_subject_and_roles() -> None:
    who = hs_verifier().verify(token(roles=["operator", "viewer"]))
    assert who.subject == "alice" and who.roles == {"operator", "viewer"} and who.operator


def test_a_roles_claim_given_as_one_string_counts() -> None:
    assert hs_verifier().verify(token(roles="operator")).operator  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("made", "reason"),
    [
        (lambda: token(ttl=-60), "token expired"),
        (lambda: token(nbf=time.time() + 120), "token not yet valid (nbf/iat in the future)"),
        (lambda: token(key="k" * 40), "bad signature"),
        (lambda: token(aud="another-api"), "wrong audience (expected 'sikka-scaling')"),
        (lambda: token(aud=None), "token lacks the 'aud' claim"),
        (lambda: token(exp=False), "token lacks the 'exp' claim"),
        (lambda: token(sub=None), "token lacks the 'sub' claim"),
        (lambda: none_token(), "algorithm 'none' not accepted (this server accepts HS256)"),
        (lambda: "not-a-token", "malformed token"),
    ],
    ids=[
        "expired",
        "not-yet-valid",
        "wrong-key",
        "wrong-audience",
        "no-audience",
        "no-exp",
        "no-sub",
        "alg-none",
        "garbage",
    ],
)
def test_bad_tokens_are_rejected_with_the_reason(made: Any, reason: str) -> None:
    with pytest.raises(TokenRejected) as caught:
        hs_verifier().verify(made())
    assert str(caught.value) == reason


def test_leeway_accepts_a_token_just_expired() -> None:
    assert hs_verifier(leeway=30.0).verify(token(ttl=-10)).subject == "alice"
    with pytest.raises(TokenRejected, match="token expired"):
        hs_verifier(leeway=0.0).verify(token(ttl=-10))


def test_the_issuer_is_checked_only_when_configured() -> None:
    assert hs_verifier().verify(token(iss="anyone")).subject == "alice"
    strict = hs_verifier(issuer="https://id.example")
    assert strict.verify(token(iss="https://id.example")).subject == "alice"
    with pytest.raises(TokenRejected, match="wrong issuer"):
        strict.verify(token(iss="https://evil.example"))
    with pytest.raises(TokenRejected, match="'iss' claim"):
        strict.verify(token())


def test_an_rs256_token_is_refused_by_an_hs256_server() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenRejected, match="algorithm 'RS256' not accepted"):
        hs_verifier().verify(token(key=key, alg="RS256"))


def test_the_key_source_comes_from_the_environment() -> None:
    with pytest.raises(KeySourceError, match=r"^no key source: set SIKKA_JWT_SECRET"):
        settings_from_env({})
    with pytest.raises(
        KeySourceError, match="SIKKA_JWT_SECRET is 5 bytes: HS256 needs at least 32"
    ):
        settings_from_env({"SIKKA_JWT_SECRET": "short"})
    with pytest.raises(KeySourceError, match="are both set"):
        settings_from_env({"SIKKA_JWT_SECRET": SECRET, "SIKKA_JWT_JWKS_URL": "http://x"})
    with pytest.raises(KeySourceError, match="SIKKA_JWT_LEEWAY must be seconds"):
        settings_from_env({"SIKKA_JWT_SECRET": SECRET, "SIKKA_JWT_LEEWAY": "soon"})
    got = settings_from_env(
        {"SIKKA_JWT_SECRET": SECRET, "SIKKA_JWT_ISSUER": "me", "SIKKA_JWT_AUDIENCE": "ours"}
    )
    assert (got.audience, got.issuer, got.leeway) == ("ours", "me", 30.0)
    assert settings_from_env({"SIKKA_JWT_JWKS_URL": "https://id/jwks"}).audience == AUDIENCE


def test_minted_tokens_pass_and_unknown_roles_are_refused() -> None:
    made = mint(SECRET.encode(), subject="ci:deploy", roles=["operator"], ttl=60)
    who = hs_verifier().verify(made)
    assert who.subject == "ci:deploy" and who.operator
    assert who.expires_at - time.time() == pytest.approx(60, abs=2)
    with pytest.raises(ValueError, match="unknown role"):
        mint(SECRET.encode(), subject="x", roles=["admin"], ttl=60)


# ------------------------------------------------------------------------------ JWKS


class Keys:
    """The key set a local JWKS server publishes, and how often it was fetched."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.fetches = 0


@pytest.fixture
def jwks() -> Iterator[tuple[str, Keys]]:
    keys = Keys()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            keys.fetches += 1
            body = json.dumps({"keys": keys.published}).encode()
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
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json", keys
    finally:
        server.shutdown()
        server.server_close()


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


COOLDOWN = 0.5


def jwks_verifier(url: str) -> Verifier:
    return Verifier(AuthSettings(None, url, AUDIENCE, None, 5.0), jwks_cooldown=COOLDOWN)


def test_jwks_keys_are_fetched_cached_and_rotated(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys.published = [public_jwk(old, "2026-a", "RS256")]
    verifier = jwks_verifier(url)

    signed_old = token(key=old, alg="RS256", headers={"kid": "2026-a"}, roles=["operator"])
    assert verifier.verify(signed_old).operator
    assert verifier.verify(signed_old).subject == "alice"
    assert keys.fetches == 1  # cached

    # Rotation: the identity provider now publishes an ES256 key under a new kid only.
    new = ec.generate_private_key(ec.SECP256R1())
    keys.published = [public_jwk(new, "2026-b", "ES256")]
    time.sleep(COOLDOWN + 0.1)
    signed_new = token(key=new, alg="ES256", headers={"kid": "2026-b"})
    assert verifier.verify(signed_new).subject == "alice"
    assert keys.fetches == 2  # the unknown kid fetched the set again

    # The retired key is gone from the set: its tokens fail, without hammering the JWKS.
    with pytest.raises(TokenRejected, match="unknown kid '2026-a'"):
        verifier.verify(signed_old)
    with pytest.raises(TokenRejected, match="unknown kid 'nope'"):
        verifier.verify(token(key=new, alg="ES256", headers={"kid": "nope"}))
    assert keys.fetches == 2  # within the cooldown


def test_jwks_tokens_with_a_wrong_key_or_no_kid_or_hs256_are_rejected(
    jwks: tuple[str, Keys],
) -> None:
    url, keys = jwks
    published = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys.published = [public_jwk(published, "k1", "RS256")]
    verifier = jwks_verifier(url)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenRejected, match="bad signature"):
        verifier.verify(token(key=forger, alg="RS256", headers={"kid": "k1"}))
    with pytest.raises(TokenRejected, match="no kid"):
        verifier.verify(token(key=published, alg="RS256"))
    # HS256 signed with the public key's bytes (algorithm confusion) is refused outright.
    with pytest.raises(TokenRejected, match="algorithm 'HS256' not accepted"):
        verifier.verify(token(key="x" * 40, headers={"kid": "k1"}))
    with pytest.raises(TokenRejected, match="algorithm 'none' not accepted"):
        verifier.verify(none_token())
    # An ES256 token naming the RS256 key's kid: the key says which algorithm it signs.
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenRejected, match=r"algorithm 'ES256' is not the key's \(RS256\)"):
        verifier.verify(token(key=other, alg="ES256", headers={"kid": "k1"}))


def test_an_unreachable_jwks_rejects_tokens() -> None:
    verifier = jwks_verifier("http://127.0.0.1:9/jwks.json")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenRejected, match="the JWKS could not be fetched"):
        verifier.verify(token(key=key, alg="RS256", headers={"kid": "k1"}))

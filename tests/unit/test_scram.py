"""SCRAM-SHA-256 verifiers: checked against RFC 7677's exchange, the shape PostgreSQL and
PgBouncer read, and SASLprep of non-ASCII passwords."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from scaling.local.credentials import new_secrets
from scaling.render.env import VERIFIER_OF
from scaling.render.pgbouncer import render_userlist_line
from scaling.render.scram import is_scram_verifier, saslprep, scram_verifier

# RFC 7677, section 3: user "user", password "pencil".
CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL_BARE = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def keys(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    _, params, pair = verifier.split("$")
    count, salt = params.split(":")
    stored, server = pair.split(":")
    return int(count), *(base64.b64decode(v) for v in (salt, stored, server))  # type: ignore[return-value]


def test_the_rfc_7677_exchange_verifies_against_the_verifier() -> None:
    """A server holding only the verifier accepts the RFC's client proof and answers with
    the RFC's server signature: the keys are the ones PostgreSQL derives."""
    verifier = scram_verifier("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    assert verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    _, _, stored_key, server_key = keys(verifier)
    auth_message = f"{CLIENT_FIRST_BARE},{SERVER_FIRST},{CLIENT_FINAL_BARE}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(PROOF), signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert hmac.digest(server_key, auth_message, "sha256") == base64.b64decode(SERVER_SIGNATURE)


def test_salt_and_count_decide_the_verifier() -> None:
    one = scram_verifier("secret", b"0123456789abcdef")
    assert one == scram_verifier("secret", b"0123456789abcdef")
    assert one != scram_verifier("secret", b"fedcba9876543210")
    assert one != scram_verifier("secret", b"0123456789abcdef", iterations=4097)
    assert keys(scram_verifier("secret", b"salt", iterations=10))[0] == 10
    with pytest.raises(ValueError):
        scram_verifier("secret", b"")


def test_only_a_verifier_has_a_verifiers_shape() -> None:
    assert is_scram_verifier(scram_verifier("x", b"0123456789abcdef"))
    for value in (
        "plain-password",
        "SCRAM-SHA-256$4096:c2FsdA==$short:short",
        "SCRAM-SHA-256$many:c2FsdA==$" + "A" * 44 + ":" + "A" * 44,
        "md5" + "0" * 32,
        "",
    ):
        assert not is_scram_verifier(value), value


def test_the_auth_file_refuses_a_plaintext_password() -> None:
    with pytest.raises(ValueError, match="SCRAM-SHA-256 verifier"):
        render_userlist_line("sikka", "plain-password")
    verifier = scram_verifier("x", b"0123456789abcdef")
    assert render_userlist_line("sikka", verifier) == f'"sikka" "{verifier}"\n'


def test_saslprep_as_postgresql_applies_it() -> None:
    # ASCII as it is, control characters included (PostgreSQL checks nothing then).
    assert saslprep("pa ss\tword") == b"pa ss\tword"
    # A non-ASCII space becomes a space, a soft hyphen goes, NFKC composes and folds.
    assert saslprep("a\u00a0b\u00adc") == b"a bc"
    assert saslprep("\u2168") == b"IX"
    assert saslprep("e\u0301") == "\u00e9".encode()
    # Not a valid SASLprep string (a prohibited character, mixed directions): the raw bytes.
    assert saslprep("a\u0000\u00e9") == "a\u0000\u00e9".encode()
    assert saslprep("\u05d0a") == "\u05d0a".encode()


def test_local_secrets_carry_each_verifier_of_its_password() -> None:
    values = new_secrets()
    for verifier, password in VERIFIER_OF.items():
        _, salt, _, _ = keys(values[verifier])
        assert len(salt) == 16
        assert values[verifier] == scram_verifier(values[password], salt)
    # Each verifier has a salt of its own.
    salts = {keys(values[v])[1] for v in VERIFIER_OF}
    assert len(salts) == len(VERIFIER_OF)

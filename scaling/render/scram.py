"""SCRAM-SHA-256 verifiers as PostgreSQL stores them in pg_authid (RFC 5802, RFC 7677).

``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``. The application role's
password is set on PostgreSQL as such a verifier, and PgBouncer's auth file holds the very
same one: PgBouncer then checks a client's proof with two HMACs instead of deriving the key
(4,096 PBKDF2 rounds) from a plaintext password at every login, and logs in to PostgreSQL
with the key the client's proof revealed (SCRAM pass-through), which works only when salt
and iteration count are the server's own. The verifier is a secret like the password (it
lets anyone who holds it log in through SCRAM pass-through): it is made where the password
is, from the password and a random salt, and travels as the password does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stringprep
import unicodedata

PREFIX = "SCRAM-SHA-256"
# PostgreSQL's default scram_iterations.
ITERATIONS = 4096
SALT_BYTES = 16


def saslprep(password: str) -> bytes:
    """The bytes PostgreSQL and libpq derive the key from (pg_saslprep): an ASCII password
    as it is; otherwise RFC 4013's SASLprep, or the raw UTF-8 when the password is not a
    valid SASLprep string (PostgreSQL falls back to the raw bytes then)."""
    raw = password.encode()
    if password.isascii():
        return raw
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21,
        stringprep.in_table_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if not normal or any(check(c) for c in normal for check in prohibited):
        return raw
    right_to_left = [stringprep.in_table_d1(c) for c in normal]
    if any(right_to_left) and (
        any(stringprep.in_table_d2(c) for c in normal)
        or not (right_to_left[0] and right_to_left[-1])
    ):
        return raw
    return normal.encode()


def scram_verifier(password: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    """The verifier PostgreSQL would store for ``password`` with this salt and count."""
    if len(salt) < 1 or iterations < 1:
        raise ValueError("a SCRAM verifier needs a salt and at least one iteration")
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"{PREFIX}${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def is_scram_verifier(value: str) -> bool:
    """Whether ``value`` has a verifier's shape (PostgreSQL stores such a password as is)."""
    head, sep, keys = value.partition("$")
    count, _, rest = keys.partition(":")
    salt, _, pair = rest.partition("$")
    stored, _, server = pair.partition(":")
    if head != PREFIX or not sep or not count.isdigit():
        return False
    try:
        decoded = [base64.b64decode(part, validate=True) for part in (salt, stored, server)]
    except ValueError:
        return False
    return bool(decoded[0]) and len(decoded[1]) == len(decoded[2]) == 32

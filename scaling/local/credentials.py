"""Per-run secrets: generated fresh, stored once with mode 0600, referenced by name."""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path

from scaling.render.env import SECRET_VARIABLES, VERIFIER_OF
from scaling.render.scram import SALT_BYTES, scram_verifier

_ALPHABET = string.ascii_letters + string.digits


def generate_password(length: int = 32) -> str:
    # Alphanumeric only: no quoting question in any config, URL or psql variable.
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def write_private(
    path: Path, content: str, *, uid: int | None = None, gid: int | None = None
) -> None:
    """Create ``path`` with mode 0600 before any secret byte is written to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        if uid is not None:
            os.fchown(fd, uid, -1 if gid is None else gid)
        os.write(fd, content.encode())
    finally:
        os.close(fd)


# The gateways' HS256 key: 64 alphanumerics (~380 bits), as the stacks generate it.
LENGTHS = {"gateway-jwt-secret": 64}


def new_secrets() -> dict[str, str]:
    """One password per secret name of the stacks (postgres-password, ...), and the SCRAM
    verifiers made from them (VERIFIER_OF), each with a random salt."""
    values = {
        name: generate_password(LENGTHS.get(name, 32))
        for name in SECRET_VARIABLES
        if name not in VERIFIER_OF
    }
    return with_verifiers(values)


def with_verifiers(values: dict[str, str]) -> dict[str, str]:
    """``values`` and the verifiers of VERIFIER_OF it lacks, made from its passwords."""
    made = {
        verifier: scram_verifier(values[password], secrets.token_bytes(SALT_BYTES))
        for verifier, password in VERIFIER_OF.items()
        if verifier not in values and password in values
    }
    return {**values, **made}


def save_secrets(path: Path, values: dict[str, str]) -> None:
    write_private(path, json.dumps(values, indent=2) + "\n")


def load_secrets(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a secrets file")
    return {str(k): str(v) for k, v in data.items()}


def inherited_secrets(source: dict[str, str]) -> dict[str, str]:
    """A phase that starts as a replica of ``source``'s run: every secret of the source as it
    is (physical replication copies the roles and their SCRAM verifiers, PgBouncer passes
    SCRAM through only with the very verifier the server holds, and the gateways' key keeps
    clients' tokens valid), plus a fresh password for any name the source lacks and the
    verifiers of those."""
    values = dict(source)
    for name in SECRET_VARIABLES:
        if name not in VERIFIER_OF and name not in values:
            values[name] = generate_password(LENGTHS.get(name, 32))
    return with_verifiers(values)

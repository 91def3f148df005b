"""Tokens for a local run's gateways: the HS256 key file `local up` writes, and minting
test tokens from it (`sikka-scaling token`) with the gateway's own signing helper."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

from gateway.auth import MIN_SECRET_BYTES, ROLES, Role, mint_token
from gateway.protocol import TRIP_ID_RE
from scaling.local.credentials import write_private
from scaling.local.state import state_dir_for
from scaling.model import PhaseSpec

KEY_FILE = "gateway-jwt.key"
MAX_TTL_SECONDS = 30 * 24 * 3600


class TokenError(ValueError):
    """A token cannot be minted; the message says why, in one line."""


def key_path(state_dir: Path) -> Path:
    return state_dir / KEY_FILE


def write_key(state_dir: Path, key: str) -> Path:
    """The run's HS256 key alone in a file, mode 0600 (what --secret-file reads too)."""
    path = key_path(state_dir)
    write_private(path, key + "\n")
    return path


def auth_summary(spec: PhaseSpec, key_file: Path | None) -> dict[str, object]:
    """How the local run's gateways check tokens, for `local up --json`."""
    auth = spec.gateway.auth
    return {
        "mode": auth.mode,
        "algorithms": ["HS256"]
        if auth.shared_secret
        else (["RS256", "ES256"] if auth.mode == "required" else []),
        "key_file": str(key_file) if key_file else None,
        "jwks_url": auth.jwks_url,
        "issuer": auth.issuer,
        "audience": auth.audience,
        "allowed_origins": list(auth.allowed_origins),
    }


def read_key(path: Path) -> str:
    try:
        key = path.read_text().strip()
    except OSError as error:
        raise TokenError(f"{path}: cannot read the key ({error.strerror})") from None
    if len(key.encode()) < MIN_SECRET_BYTES:
        raise TokenError(f"{path}: an HS256 key has at least {MIN_SECRET_BYTES} bytes")
    return key


def run_key_file(spec: PhaseSpec, stack: str, state_dir: Path | None = None) -> Path:
    """The key file of the stack's local run."""
    auth = spec.gateway.auth
    if auth.mode == "disabled":
        raise TokenError(
            f"stack {stack!r} runs its gateways with gateway.auth.mode 'disabled': they need "
            "no token (pass --secret-file to mint one anyway)"
        )
    if not auth.shared_secret:
        raise TokenError(
            f"stack {stack!r} verifies tokens against {auth.jwks_url} (RS256/ES256): mint "
            "them with that identity provider, or pass --secret-file for an HS256 key"
        )
    path = key_path(state_dir_for(stack, state_dir))
    if not path.is_file():
        raise TokenError(
            f"no local run of {stack!r} holds a gateway key at {path}: start one with "
            f"`sikka-scaling local up {stack}`, or pass --secret-file"
        )
    return path


def mint(spec: PhaseSpec, key: str, *, sub: str, role: str, trips: Sequence[str], ttl: int) -> str:
    """A token for the stack's gateways: its issuer and audience, the given claims."""
    if role not in ROLES:
        raise TokenError(f"--role must be one of {', '.join(ROLES)} (got {role!r})")
    bad = [t for t in trips if not TRIP_ID_RE.match(t)]
    if bad:
        raise TokenError(f"--trip {bad[0]!r}: a trip id is 1-64 characters of [A-Za-z0-9._:-]")
    if not sub or len(sub) > 128:
        raise TokenError("--sub must be 1-128 characters")
    if not 1 <= ttl <= MAX_TTL_SECONDS:
        raise TokenError(f"--ttl must be between 1 and {MAX_TTL_SECONDS} seconds")
    auth = spec.gateway.auth
    return mint_token(
        key,
        sub=sub,
        role=cast(Role, role),
        trips=list(trips),
        ttl=ttl,
        issuer=auth.issuer,
        audience=auth.audience,
    )

"""Bearer tokens of the scaling API: who may read, who may transition.

One key source, from the environment:

- ``SIKKA_JWT_SECRET``: HS256 with this shared secret (at least 32 bytes);
- ``SIKKA_JWT_JWKS_URL``: RS256 or ES256, the key named by the token's ``kid`` taken from
  this JWKS (PyJWT's :class:`jwt.PyJWKClient`: the set cached five minutes, fetched again when a
  token names a ``kid`` it does not hold, so a rotated key is picked up without a restart).

Audience ``SIKKA_JWT_AUDIENCE`` (default ``sikka-scaling``), issuer ``SIKKA_JWT_ISSUER``
(checked only when set), ``exp`` required, ``exp``/``nbf``/``iat`` checked with
``SIKKA_JWT_LEEWAY`` seconds of leeway (default 30). The ``roles`` claim (a list, or one
string) grants: ``operator`` may transition; any valid token may read.

The token itself never reaches a log line or an error message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

SECRET_ENV = "SIKKA_JWT_SECRET"
JWKS_ENV = "SIKKA_JWT_JWKS_URL"
AUDIENCE_ENV = "SIKKA_JWT_AUDIENCE"
ISSUER_ENV = "SIKKA_JWT_ISSUER"
LEEWAY_ENV = "SIKKA_JWT_LEEWAY"

DEFAULT_AUDIENCE = "sikka-scaling"
DEFAULT_LEEWAY = 30.0
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key at least as long as the hash
OPERATOR = "operator"
VIEWER = "viewer"
ROLES = (VIEWER, OPERATOR)
ASYMMETRIC = ("RS256", "ES256")
JWKS_TIMEOUT = 5.0
# The key set is kept this long; a token naming a kid it lacks fetches it again, unless the
# set was fetched less than the cooldown ago (unknown kids cannot make the server hammer the
# JWKS; a key rotated in is accepted at most that long after the last fetch).
JWKS_LIFESPAN = 300.0
JWKS_COOLDOWN = 10.0


class KeySourceError(ValueError):
    """No usable key source: the server must not start."""


class TokenRejected(Exception):
    """A token that does not authenticate anyone (401); the message says why, without the
    token."""


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for."""

    subject: str
    roles: frozenset[str]
    expires_at: float

    @property
    def operator(self) -> bool:
        return OPERATOR in self.roles


@dataclass(frozen=True)
class AuthSettings:
    secret: bytes | None
    jwks_url: str | None
    audience: str
    issuer: str | None
    leeway: float

    @property
    def source(self) -> str:
        return f"HS256 ({SECRET_ENV})" if self.secret else f"RS256/ES256 ({JWKS_ENV})"


def settings_from_env(env: Mapping[str, str] | None = None) -> AuthSettings:
    """The key source and the checks, from the environment; :class:`KeySourceError` names
    the variable at fault."""
    env = os.environ if env is None else env
    secret = env.get(SECRET_ENV) or None
    jwks_url = env.get(JWKS_ENV) or None
    if secret and jwks_url:
        raise KeySourceError(
            f"{SECRET_ENV} and {JWKS_ENV} are both set: set one key source "
            "(HS256 shared secret or RS256/ES256 JWKS), not both"
        )
    if not secret and not jwks_url:
        raise KeySourceError(
            f"no key source: set {SECRET_ENV} (HS256, at least {MIN_SECRET_BYTES} bytes) or "
            f"{JWKS_ENV} (RS256/ES256 keys); the scaling API never runs without authentication"
        )
    if secret and len(secret.encode()) < MIN_SECRET_BYTES:
        raise KeySourceError(
            f"{SECRET_ENV} is {len(secret.encode())} bytes: HS256 needs at least "
            f"{MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`)"
        )
    if jwks_url and not jwks_url.startswith(("https://", "http://")):
        raise KeySourceError(f"{JWKS_ENV} must be an http(s) URL, got {jwks_url!r}")
    raw_leeway = env.get(LEEWAY_ENV)
    try:
        leeway = DEFAULT_LEEWAY if raw_leeway is None else float(raw_leeway)
    except ValueError:
        raise KeySourceError(f"{LEEWAY_ENV} must be seconds, got {raw_leeway!r}") from None
    if not 0 <= leeway <= 300:
        raise KeySourceError(f"{LEEWAY_ENV} must be between 0 and 300 seconds, got {leeway:g}")
    return AuthSettings(
        secret=secret.encode() if secret else None,
        jwks_url=jwks_url,
        audience=env.get(AUDIENCE_ENV) or DEFAULT_AUDIENCE,
        issuer=env.get(ISSUER_ENV) or None,
        leeway=leeway,
    )


class Verifier:
    """Checks bearer tokens against one key source."""

    def __init__(self, settings: AuthSettings, *, jwks_cooldown: float = JWKS_COOLDOWN) -> None:
        self.settings = settings
        self._jwks = (
            jwt.PyJWKClient(
                settings.jwks_url,
                lifespan=JWKS_LIFESPAN,
                timeout=JWKS_TIMEOUT,
                cooldown_duration=jwks_cooldown,
            )
            if settings.jwks_url
            else None
        )

    @property
    def algorithms(self) -> list[str]:
        return ["HS256"] if self.settings.secret else list(ASYMMETRIC)

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            # "none" included: PyJWT refuses it too, this says so before any key lookup.
            raise TokenRejected(
                f"algorithm {alg!r} not accepted (this server accepts {', '.join(self.algorithms)})"
            )
        key: Any
        if self._jwks is not None:
            if not header.get("kid"):
                raise TokenRejected("token has no kid: the JWKS key cannot be chosen")
            try:
                # Cached; a kid the cached set lacks fetches the set again (key rotation).
                jwk = self._jwks.get_signing_key(str(header["kid"]))
            except jwt.PyJWKClientConnectionError:
                raise TokenRejected("the JWKS could not be fetched") from None
            except jwt.PyJWKClientError:
                raise TokenRejected(f"unknown kid {str(header['kid'])[:64]!r}") from None
            if jwk.algorithm_name and jwk.algorithm_name != alg:
                raise TokenRejected(f"algorithm {alg!r} is not the key's ({jwk.algorithm_name})")
            key = jwk.key
        else:
            key = self.settings.secret
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("token not yet valid (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(f"wrong audience (expected {self.settings.audience!r})") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected(f"wrong issuer (expected {self.settings.issuer!r})") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenRejected(f"token lacks the {error.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature") from None
        except jwt.PyJWTError as error:
            raise TokenRejected(f"invalid token ({type(error).__name__})") from None
        return Principal(
            subject=str(claims["sub"]),
            roles=frozenset(_roles(claims.get("roles"))),
            expires_at=float(claims["exp"]),
        )


def _roles(claim: Any) -> list[str]:
    if claim is None:
        return []
    if isinstance(claim, str):
        return [claim]
    if isinstance(claim, list):
        return [r for r in claim if isinstance(r, str)]
    return []


def mint(
    secret: bytes,
    *,
    subject: str,
    roles: Sequence[str],
    ttl: float,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token for a person or a CI job (``sikka-scaling api-token``)."""
    if len(secret) < MIN_SECRET_BYTES:
        raise KeySourceError(f"{SECRET_ENV} is {len(secret)} bytes: at least {MIN_SECRET_BYTES}")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}: one of {', '.join(ROLES)}")
    if ttl <= 0:
        raise ValueError("ttl must be more than 0 seconds")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "roles": sorted(set(roles)),
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl),
    }
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm="HS256")

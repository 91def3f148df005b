"""Who may connect, and what they may do: JWT verification and trip-scoped permissions.

Transport-free and small on purpose, so that other services of the project (the scaling
API) import the very same rules::

    verifier = TokenVerifier(secret=key)                 # HS256, a shared secret
    verifier = TokenVerifier(jwks_url="https://…/jwks")  # RS256 / ES256, keys by `kid`
    claims = verifier.verify(token)                      # Claims, or raises AuthError
    claims.may_subscribe("T1"), claims.may_publish("T1")

A token carries ``sub`` (who), ``role`` (``rider``, ``driver`` or ``ops``), ``trips`` (the
trip ids the client may use) and ``exp``; ``iss`` and ``aud`` are checked when configured.
A rider may subscribe to its own trips; a driver may publish (and subscribe) for its own
trips; ops may subscribe to any trip and publish none.

:func:`mint_token` signs HS256 tokens with the shared secret: the local runner, the
``sikka-scaling token`` command and the tests use it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import jwt

from gateway.protocol import TRIP_ID_RE

Role = Literal["rider", "driver", "ops"]
ROLES: tuple[Role, ...] = ("rider", "driver", "ops")

# Close codes (4000-4999 are the application's, RFC 6455 §7.4.2), after HTTP's 401 / 403.
UNAUTHENTICATED = 4401
FORBIDDEN = 4403
# The verifier could not get the keys to check a token (JWKS endpoint unreachable): the
# client is not at fault, so it is told to come back, as for a full instance.
TRY_AGAIN_LATER = 1013

HMAC_ALGORITHMS = ("HS256",)
JWKS_ALGORITHMS = ("RS256", "ES256")
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash (32 bytes).
MIN_SECRET_BYTES = 32
# Bounds on what a client can make the verifier chew on. websockets caps a handshake
# header line at 8 KiB anyway; a connection holds at most 100 subscriptions
# (server.MAX_SUBSCRIPTIONS_PER_CONNECTION), so a token needs no more trips than that.
MAX_TOKEN_CHARS = 8192
MAX_TOKEN_TRIPS = 100
MAX_SUBJECT_CHARS = 128
# Clock skew tolerated on exp / nbf / iat between the issuer and the gateway.
LEEWAY_SECONDS = 30
JWKS_TIMEOUT_SECONDS = 5.0
# At most one JWKS refetch per this long for tokens naming an unknown `kid`, so forged
# tokens cannot turn the gateway into a flood against the identity provider.
JWKS_COOLDOWN_SECONDS = 30.0


class AuthError(Exception):
    """A client may not connect: ``code`` is the WebSocket close code, ``reason`` the
    close reason (short, never echoing the token)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    """What a verified token allows. ``unrestricted`` is the stand-in when authentication
    is disabled: it may do everything, and says so in logs."""

    sub: str
    role: Role | None
    trips: frozenset[str]
    expires_at: float | None
    unrestricted: bool = False

    @classmethod
    def anyone(cls) -> Claims:
        return cls("anonymous", None, frozenset(), None, unrestricted=True)

    def may_subscribe(self, trip_id: str) -> bool:
        if self.unrestricted or self.role == "ops":
            return True
        return trip_id in self.trips

    def may_publish(self, trip_id: str) -> bool:
        if self.unrestricted:
            return True
        return self.role == "driver" and trip_id in self.trips

    def subscribe_denial(self, trip_id: str) -> str | None:
        """Why a subscribe is refused (the error frame's text), or None when allowed."""
        if self.may_subscribe(trip_id):
            return None
        return f"forbidden: trip {trip_id!r} is not in your token"

    def publish_denial(self, trip_id: str) -> str | None:
        if self.may_publish(trip_id):
            return None
        if self.role != "driver":
            who = "ops" if self.role == "ops" else f"a {self.role}"
            return f"forbidden: {who} may not publish locations"
        return f"forbidden: trip {trip_id!r} is not in your token"


class TokenVerifier:
    """Verifies a JWT and turns its claims into :class:`Claims`.

    ``secret``: HS256 tokens are checked with it. ``jwks_url``: RS256/ES256 tokens are
    checked with the key of their ``kid`` from that JWK Set (fetched on first use, cached
    for five minutes, refetched at most every 30 s for an unknown ``kid``). With both, the
    token's ``alg`` picks one; ``none`` and every other algorithm are refused.

    :meth:`verify` may block on the JWKS fetch when ``jwks_url`` is set
    (:attr:`uses_network`): call it from a thread in an event loop.
    """

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        jwks_url: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = LEEWAY_SECONDS,
    ) -> None:
        if secret is None and jwks_url is None:
            raise ValueError("a TokenVerifier needs a secret (HS256) or a JWKS URL")
        key = secret.encode() if isinstance(secret, str) else secret
        if key is not None and len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"the HS256 secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = key
        self._jwks = (
            jwt.PyJWKClient(
                jwks_url,
                cache_jwk_set=True,
                lifespan=300,
                timeout=JWKS_TIMEOUT_SECONDS,
                cooldown_duration=JWKS_COOLDOWN_SECONDS,
            )
            if jwks_url
            else None
        )
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        # Refuse short HMAC keys outright rather than warn.
        self._jwt = jwt.PyJWT(options={"enforce_minimum_key_length": True})

    @property
    def uses_network(self) -> bool:
        return self._jwks is not None

    @property
    def algorithms(self) -> tuple[str, ...]:
        return (HMAC_ALGORITHMS if self._secret else ()) + (JWKS_ALGORITHMS if self._jwks else ())

    def verify(self, token: str) -> Claims:
        if not token:
            raise AuthError(UNAUTHENTICATED, "missing token")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError(UNAUTHENTICATED, "invalid token: too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError(UNAUTHENTICATED, "invalid token: malformed") from None
        algorithm = header.get("alg")
        key = self._key_for(algorithm, token)
        required = ["exp", "sub"]
        required += ["iss"] if self.issuer else []
        required += ["aud"] if self.audience else []
        try:
            payload = self._jwt.decode(
                token,
                key,
                algorithms=[cast(str, algorithm)],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(UNAUTHENTICATED, "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(UNAUTHENTICATED, "token not yet valid") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthError(UNAUTHENTICATED, f"invalid token: no {error.claim} claim") from None
        except jwt.InvalidAudienceError:
            raise AuthError(UNAUTHENTICATED, "invalid token: wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError(UNAUTHENTICATED, "invalid token: wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise AuthError(UNAUTHENTICATED, "invalid token: bad signature") from None
        except jwt.PyJWTError:
            raise AuthError(UNAUTHENTICATED, "invalid token") from None
        return claims_from_payload(payload)

    def _key_for(self, algorithm: object, token: str) -> Any:
        if algorithm in HMAC_ALGORITHMS and self._secret is not None:
            return self._secret
        if algorithm in JWKS_ALGORITHMS and self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError:
                raise AuthError(TRY_AGAIN_LATER, "cannot fetch signing keys, try again") from None
            except jwt.PyJWTError:
                raise AuthError(UNAUTHENTICATED, "invalid token: unknown signing key") from None
        shown = algorithm if isinstance(algorithm, str) and len(algorithm) <= 16 else "?"
        raise AuthError(UNAUTHENTICATED, f"invalid token: algorithm {shown} not accepted")


def claims_from_payload(payload: dict[str, Any]) -> Claims:
    """Check the claims' shapes (the signature and times are already verified)."""
    sub = payload.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= MAX_SUBJECT_CHARS:
        raise AuthError(UNAUTHENTICATED, f"invalid token: sub must be 1-{MAX_SUBJECT_CHARS} chars")
    role = payload.get("role")
    if role not in ROLES:
        raise AuthError(UNAUTHENTICATED, "invalid token: role must be rider, driver or ops")
    trips = payload.get("trips")
    if not isinstance(trips, list) or len(trips) > MAX_TOKEN_TRIPS:
        raise AuthError(
            UNAUTHENTICATED, f"invalid token: trips must be a list of at most {MAX_TOKEN_TRIPS}"
        )
    if not all(isinstance(t, str) and TRIP_ID_RE.match(t) for t in trips):
        raise AuthError(UNAUTHENTICATED, "invalid token: trips holds an invalid trip id")
    return Claims(
        sub=sub,
        role=cast(Role, role),
        trips=frozenset(trips),
        expires_at=float(payload["exp"]),
    )


def mint_token(
    secret: str | bytes,
    *,
    sub: str,
    role: Role,
    trips: Sequence[str],
    ttl: float = 3600,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token the gateway accepts (for tests, the local runner, the CLI)."""
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"the HS256 secret must be at least {MIN_SECRET_BYTES} bytes")
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "sub": sub,
        "role": role,
        "trips": list(trips),
        "iat": issued,
        "exp": issued + int(ttl),
    }
    if issuer:
        payload["iss"] = issuer
    if audience:
        payload["aud"] = audience
    return jwt.encode(payload, key, algorithm="HS256")


# ------------------------------------------------------------------------------ Origin

ANY_ORIGIN = "*"


def normalize_origin(value: str) -> str:
    """``https://App.Example.com/`` -> ``https://app.example.com`` (scheme and host are
    case-insensitive; an Origin header never has a path)."""
    return value.strip().rstrip("/").lower()


def origin_problem(value: str) -> str | None:
    """Why ``value`` is not a usable allow-list entry (``*`` or ``scheme://host[:port]``)."""
    if value == ANY_ORIGIN:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{value!r} must look like https://host[:port] (or be '*')"
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return f"{value!r} must be scheme://host[:port] only, without path or query"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"{value!r} has an invalid port"
    return None


class OriginPolicy:
    """Which ``Origin`` headers may open a connection.

    Browsers always send ``Origin`` on a WebSocket handshake, so a page of a foreign site
    is refused unless its origin is listed; native apps and servers send none and are let
    through (their token is what authenticates them). ``*`` allows every origin.
    """

    def __init__(self, allowed: Iterable[str]) -> None:
        entries = [normalize_origin(a) for a in allowed]
        self.any = ANY_ORIGIN in entries
        self.allowed = frozenset(e for e in entries if e != ANY_ORIGIN)

    def allows(self, origin: str | None) -> bool:
        if origin is None:
            return True
        return self.any or normalize_origin(origin) in self.allowed

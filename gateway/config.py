"""Gateway settings, read once from environment variables.

Everything is validated up front so that a misconfigured pod fails at start with
a message naming the offending variable, instead of failing later on the first
client or the first Redis call.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.auth import MIN_SECRET_BYTES, origin_problem

RedisMode = Literal["standalone", "sentinel", "cluster"]
REDIS_MODES: tuple[RedisMode, ...] = ("standalone", "sentinel", "cluster")
AuthMode = Literal["required", "disabled"]
AUTH_MODES: tuple[AuthMode, ...] = ("required", "disabled")
Compression = Literal["none", "deflate"]
COMPRESSIONS: tuple[Compression, ...] = ("none", "deflate")
EventLoop = Literal["uvloop", "asyncio"]
EVENT_LOOPS: tuple[EventLoop, ...] = ("uvloop", "asyncio")

DEFAULT_METRICS_PORT = 9102
# A driver sends a position every second or so and a rider subscribes to a few trips:
# 20 frames/s with bursts of 40 is far above any real client and far below a flood.
DEFAULT_RATE_LIMIT = 20.0
DEFAULT_RATE_BURST = 40
# Redis connections one gateway process may open for publishing (per node on a cluster);
# the stacks derive it from the phase (scaling/render/gateway_env.py).
DEFAULT_REDIS_MAX_CONNECTIONS = 64


class ConfigError(ValueError):
    """A configuration variable is missing or malformed."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {problem}")


@dataclass(frozen=True)
class AuthSettings:
    """How clients authenticate (see gateway/auth.py and README "Authentication")."""

    mode: AuthMode = "required"
    # HS256 shared secret; repr=False keeps it out of logs and tracebacks.
    jwt_secret: str | None = field(default=None, repr=False)
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    # Origin allow-list; "*" allows any. Handshakes without Origin (non-browser
    # clients) are always allowed: their token is what authenticates them.
    allowed_origins: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    gateway_id: str
    max_connections: int
    redis_mode: RedisMode
    redis_url: str | None = None
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_master_name: str | None = None
    redis_cluster_nodes: tuple[tuple[str, int], ...] = ()
    # repr=False: the password must never end up in logs or tracebacks.
    redis_password: str | None = field(default=None, repr=False)
    drain_seconds: float = 10.0
    # /metrics listens here only, apart from the clients' port (0: any free port).
    metrics_port: int = DEFAULT_METRICS_PORT
    auth: AuthSettings = AuthSettings()
    rate_limit: float = DEFAULT_RATE_LIMIT
    rate_burst: int = DEFAULT_RATE_BURST
    # permessage-deflate: off by default (it costs ~40 KB of zlib state per connection
    # and CPU per frame, for ~150-byte frames it barely shrinks).
    compression: Compression = "none"
    event_loop: EventLoop = "uvloop"
    redis_max_connections: int = DEFAULT_REDIS_MAX_CONNECTIONS
    # Processes serving the port together (SO_REUSEPORT); max_connections is shared.
    processes: int = 1

    @property
    def reuse_port(self) -> bool:
        return self.processes > 1


def _int(env: Mapping[str, str], name: str, default: int | None, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        if default is None:
            raise ConfigError(name, "is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(name, f"must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(name, f"must be between {lo} and {hi}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    # "not lo <= value <= hi" is also true for NaN, which float() accepts.
    if not lo <= value <= hi:
        raise ConfigError(name, f"must be between {lo:g} and {hi:g}, got {raw}")
    return value


def parse_host_ports(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    """Parse ``host:port,host:port`` (IPv6 as ``[::1]:26379``)."""
    result: list[tuple[str, int]] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, sep, port_text = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host:
            raise ConfigError(name, f"entry {item!r} must look like host:port")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(name, f"entry {item!r} has a non-numeric port") from None
        if not 1 <= port <= 65535:
            raise ConfigError(name, f"entry {item!r} has a port outside 1-65535")
        result.append((host, port))
    if not result:
        raise ConfigError(name, "must list at least one host:port")
    return tuple(result)


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first is the default), case-insensitive."""
    text = env.get(name, "").strip().lower() or choices[0]
    if text not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {text!r}")
    return text


def _optional(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def load_auth(env: Mapping[str, str]) -> AuthSettings:
    mode_text = env.get("GATEWAY_AUTH_MODE", "").strip().lower() or "required"
    if mode_text not in AUTH_MODES:
        raise ConfigError(
            "GATEWAY_AUTH_MODE", f"must be one of {', '.join(AUTH_MODES)}, got {mode_text!r}"
        )
    mode: AuthMode = mode_text
    secret = env.get("GATEWAY_JWT_SECRET") or None
    jwks_url = _optional(env, "GATEWAY_JWKS_URL")
    origins = tuple(
        o.strip() for o in env.get("GATEWAY_ALLOWED_ORIGINS", "").split(",") if o.strip()
    )
    for origin in origins:
        problem = origin_problem(origin)
        if problem:
            raise ConfigError("GATEWAY_ALLOWED_ORIGINS", problem)
    if secret is not None and len(secret.encode()) < MIN_SECRET_BYTES:
        # Never echo the value.
        raise ConfigError("GATEWAY_JWT_SECRET", f"must be at least {MIN_SECRET_BYTES} bytes")
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        raise ConfigError("GATEWAY_JWKS_URL", "must be an https:// (or http://) URL")
    if mode == "required" and secret is None and jwks_url is None:
        raise ConfigError(
            "GATEWAY_JWT_SECRET",
            "is required when GATEWAY_AUTH_MODE=required (or set GATEWAY_JWKS_URL)",
        )
    return AuthSettings(
        mode=mode,
        jwt_secret=secret,
        jwks_url=jwks_url,
        issuer=_optional(env, "GATEWAY_JWT_ISSUER"),
        audience=_optional(env, "GATEWAY_JWT_AUDIENCE"),
        allowed_origins=origins,
    )


def default_gateway_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``env`` (defaults to ``os.environ``).

    The gateway keeps no durable state and never uses the database: the platform gives
    it no database setting, and ``DATABASE_URL``, if set, is deliberately ignored.
    """
    env = os.environ if env is None else env

    host = env.get("GATEWAY_HOST", "").strip() or "0.0.0.0"
    port = _int(env, "GATEWAY_PORT", 8080, 1, 65535)
    gateway_id = env.get("GATEWAY_ID", "").strip() or default_gateway_id()
    if len(gateway_id) > 128:
        raise ConfigError("GATEWAY_ID", "must be at most 128 characters")
    max_connections = _int(env, "WEBSOCKET_MAX_CONNECTIONS", 10_000, 1, 1_000_000)
    drain_seconds = _float(env, "GATEWAY_DRAIN_SECONDS", 10.0, 0.0, 3600.0)
    password = env.get("REDIS_PASSWORD") or None
    metrics_port = _int(env, "GATEWAY_METRICS_PORT", DEFAULT_METRICS_PORT, 1, 65535)
    if metrics_port == port:
        raise ConfigError("GATEWAY_METRICS_PORT", f"must differ from GATEWAY_PORT ({port})")
    rate_limit = _float(env, "GATEWAY_RATE_LIMIT", DEFAULT_RATE_LIMIT, 0.1, 10_000.0)
    rate_burst = _int(env, "GATEWAY_RATE_BURST", DEFAULT_RATE_BURST, 1, 10_000)
    auth = load_auth(env)
    compression: Compression = (
        "deflate" if _choice(env, "GATEWAY_COMPRESSION", COMPRESSIONS) == "deflate" else "none"
    )
    event_loop: EventLoop = (
        "asyncio" if _choice(env, "GATEWAY_EVENT_LOOP", EVENT_LOOPS) == "asyncio" else "uvloop"
    )
    processes = _int(env, "GATEWAY_PROCESSES", 1, 1, 64)
    if processes > max_connections:
        raise ConfigError(
            "GATEWAY_PROCESSES",
            f"must be at most WEBSOCKET_MAX_CONNECTIONS ({max_connections}), got {processes}",
        )
    redis_max_connections = _int(
        env, "REDIS_MAX_CONNECTIONS", DEFAULT_REDIS_MAX_CONNECTIONS, 4, 100_000
    )

    mode_text = env.get("REDIS_MODE", "").strip().lower() or "standalone"
    if mode_text not in REDIS_MODES:
        raise ConfigError(
            "REDIS_MODE", f"must be one of {', '.join(REDIS_MODES)}, got {mode_text!r}"
        )
    mode: RedisMode = mode_text

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None
    nodes: tuple[tuple[str, int], ...] = ()
    if mode == "standalone":
        url = env.get("REDIS_URL", "").strip()
        if not url:
            raise ConfigError("REDIS_URL", "is required when REDIS_MODE=standalone")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            # Do not echo the value: a URL may embed a password.
            raise ConfigError("REDIS_URL", "must start with redis://, rediss:// or unix://")
    elif mode == "sentinel":
        sentinels = parse_host_ports("REDIS_SENTINELS", env.get("REDIS_SENTINELS", ""))
        master = env.get("REDIS_MASTER_NAME", "").strip() or None
        if master is None:
            raise ConfigError("REDIS_MASTER_NAME", "is required when REDIS_MODE=sentinel")
    else:
        nodes = parse_host_ports("REDIS_CLUSTER_NODES", env.get("REDIS_CLUSTER_NODES", ""))

    return Settings(
        host=host,
        port=port,
        gateway_id=gateway_id,
        max_connections=max_connections,
        redis_mode=mode,
        redis_url=url,
        redis_sentinels=sentinels,
        redis_master_name=master,
        redis_cluster_nodes=nodes,
        redis_password=password,
        drain_seconds=drain_seconds,
        metrics_port=metrics_port,
        auth=auth,
        rate_limit=rate_limit,
        rate_burst=rate_burst,
        compression=compression,
        event_loop=event_loop,
        redis_max_connections=redis_max_connections,
        processes=processes,
    )

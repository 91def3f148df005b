"""Unit tests for settings parsing from environment variables."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, load_settings

SECRET = "k" * 32
STANDALONE = {"REDIS_URL": "redis://127.0.0.1:6379/0", "GATEWAY_JWT_SECRET": SECRET}


def test_defaults() -> None:
    s = load_settings(STANDALONE)
    assert (s.host, s.port, s.redis_mode, s.drain_seconds) == ("0.0.0.0", 8080, "standalone", 10.0)
    assert s.max_connections == 10_000
    assert s.gateway_id  # hostname-pid
    assert s.redis_password is None
    assert s.metrics_port == 9102
    assert (s.rate_limit, s.rate_burst) == (20.0, 40)
    assert s.auth.mode == "required"
    assert s.auth.jwt_secret == SECRET
    assert (s.auth.jwks_url, s.auth.issuer, s.auth.audience) == (None, None, None)
    assert s.auth.allowed_origins == ()


def test_fanout_settings() -> None:
    s = load_settings(STANDALONE)
    assert (s.compression, s.event_loop, s.processes) == ("none", "uvloop", 1)
    assert (s.redis_max_connections, s.reuse_port) == (64, False)
    t = load_settings(
        {
            **STANDALONE,
            "GATEWAY_COMPRESSION": "Deflate",
            "GATEWAY_EVENT_LOOP": "asyncio",
            "GATEWAY_PROCESSES": "4",
            "REDIS_MAX_CONNECTIONS": "416",
        }
    )
    assert (t.compression, t.event_loop, t.processes) == ("deflate", "asyncio", 4)
    assert (t.redis_max_connections, t.reuse_port) == (416, True)


def test_auth_settings() -> None:
    s = load_settings(
        {
            **STANDALONE,
            "GATEWAY_JWT_SECRET": "",
            "GATEWAY_JWKS_URL": "https://id.example.com/.well-known/jwks.json",
            "GATEWAY_JWT_ISSUER": "https://id.example.com/",
            "GATEWAY_JWT_AUDIENCE": "sikka-gateway",
            "GATEWAY_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:3000",
            "GATEWAY_METRICS_PORT": "9300",
            "GATEWAY_RATE_LIMIT": "5",
            "GATEWAY_RATE_BURST": "10",
        }
    )
    assert s.auth.jwt_secret is None
    assert s.auth.jwks_url == "https://id.example.com/.well-known/jwks.json"
    assert (s.auth.issuer, s.auth.audience) == ("https://id.example.com/", "sikka-gateway")
    assert s.auth.allowed_origins == ("https://app.example.com", "http://localhost:3000")
    assert (s.metrics_port, s.rate_limit, s.rate_burst) == (9300, 5.0, 10)
    # Disabled needs no key at all.
    off = load_settings({"REDIS_URL": "redis://h:1/0", "GATEWAY_AUTH_MODE": "disabled"})
    assert off.auth.mode == "disabled"


def test_jwt_secret_not_in_repr_nor_in_errors() -> None:
    s = load_settings(STANDALONE)
    assert SECRET not in repr(s)
    with pytest.raises(ConfigError) as info:
        load_settings({**STANDALONE, "GATEWAY_JWT_SECRET": "short-secret"})
    assert "short-secret" not in str(info.value)


def test_full_sentinel_and_cluster_settings() -> None:
    s = load_settings(
        {
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": "9000",
            "GATEWAY_ID": "gw-7",
            "WEBSOCKET_MAX_CONNECTIONS": "5",
            "GATEWAY_DRAIN_SECONDS": "2.5",
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26379,[::1]:26380",
            "REDIS_MASTER_NAME": "mymaster",
            "REDIS_PASSWORD": "s3cret",
            "DATABASE_URL": "postgresql://x/y",  # present on the platform, ignored
            "GATEWAY_AUTH_MODE": "disabled",
        }
    )
    assert (s.host, s.port, s.gateway_id, s.max_connections) == ("127.0.0.1", 9000, "gw-7", 5)
    assert s.drain_seconds == 2.5
    assert s.redis_sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert s.redis_master_name == "mymaster"
    c = load_settings(
        {**STANDALONE, "REDIS_MODE": "cluster", "REDIS_CLUSTER_NODES": "a:7000,b:7001"}
    )
    assert c.redis_cluster_nodes == (("a", 7000), ("b", 7001))


def test_password_not_in_repr() -> None:
    s = load_settings({**STANDALONE, "REDIS_PASSWORD": "hunter2"})
    assert s.redis_password == "hunter2"
    assert "hunter2" not in repr(s)


BAD = [
    ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT", "must be an integer"),
    ({"GATEWAY_PORT": "70000"}, "GATEWAY_PORT", "between 1 and 65535"),
    ({"WEBSOCKET_MAX_CONNECTIONS": "0"}, "WEBSOCKET_MAX_CONNECTIONS", "between"),
    ({"WEBSOCKET_MAX_CONNECTIONS": "lots"}, "WEBSOCKET_MAX_CONNECTIONS", "must be an integer"),
    ({"GATEWAY_DRAIN_SECONDS": "soon"}, "GATEWAY_DRAIN_SECONDS", "must be a number"),
    ({"GATEWAY_DRAIN_SECONDS": "-1"}, "GATEWAY_DRAIN_SECONDS", "between"),
    ({"GATEWAY_DRAIN_SECONDS": "nan"}, "GATEWAY_DRAIN_SECONDS", "between"),
    ({"GATEWAY_ID": "x" * 129}, "GATEWAY_ID", "at most 128"),
    ({"REDIS_MODE": "memcached"}, "REDIS_MODE", "must be one of standalone, sentinel, cluster"),
    ({"REDIS_URL": ""}, "REDIS_URL", "is required"),
    ({"REDIS_URL": "http://:pw@host"}, "REDIS_URL", "must start with redis://"),
    ({"REDIS_MODE": "sentinel", "REDIS_MASTER_NAME": "m"}, "REDIS_SENTINELS", "at least one"),
    (
        {"REDIS_MODE": "sentinel", "REDIS_SENTINELS": "h:1", "REDIS_MASTER_NAME": " "},
        "REDIS_MASTER_NAME",
        "is required",
    ),
    (
        {"REDIS_MODE": "sentinel", "REDIS_SENTINELS": "hostonly", "REDIS_MASTER_NAME": "m"},
        "REDIS_SENTINELS",
        "host:port",
    ),
    ({"REDIS_MODE": "cluster", "REDIS_CLUSTER_NODES": "h:x"}, "REDIS_CLUSTER_NODES", "non-numeric"),
    ({"REDIS_MODE": "cluster", "REDIS_CLUSTER_NODES": "h:0"}, "REDIS_CLUSTER_NODES", "1-65535"),
    ({"REDIS_MODE": "cluster"}, "REDIS_CLUSTER_NODES", "at least one"),
    ({"GATEWAY_AUTH_MODE": "optional"}, "GATEWAY_AUTH_MODE", "must be one of required, disabled"),
    ({"GATEWAY_JWT_SECRET": ""}, "GATEWAY_JWT_SECRET", "is required when GATEWAY_AUTH_MODE"),
    ({"GATEWAY_JWT_SECRET": "x" * 31}, "GATEWAY_JWT_SECRET", "at least 32 bytes"),
    ({"GATEWAY_JWKS_URL": "ftp://x/jwks"}, "GATEWAY_JWKS_URL", "https://"),
    ({"GATEWAY_ALLOWED_ORIGINS": "app.example.com"}, "GATEWAY_ALLOWED_ORIGINS", "https://host"),
    (
        {"GATEWAY_ALLOWED_ORIGINS": "https://a.example.com/path"},
        "GATEWAY_ALLOWED_ORIGINS",
        "without path",
    ),
    ({"GATEWAY_METRICS_PORT": "8080"}, "GATEWAY_METRICS_PORT", "must differ from GATEWAY_PORT"),
    ({"GATEWAY_METRICS_PORT": "0"}, "GATEWAY_METRICS_PORT", "between 1 and 65535"),
    ({"GATEWAY_RATE_LIMIT": "0"}, "GATEWAY_RATE_LIMIT", "between"),
    ({"GATEWAY_RATE_BURST": "many"}, "GATEWAY_RATE_BURST", "must be an integer"),
    ({"GATEWAY_COMPRESSION": "gzip"}, "GATEWAY_COMPRESSION", "must be one of none, deflate"),
    ({"GATEWAY_EVENT_LOOP": "trio"}, "GATEWAY_EVENT_LOOP", "must be one of uvloop, asyncio"),
    ({"GATEWAY_PROCESSES": "0"}, "GATEWAY_PROCESSES", "between 1 and 64"),
    ({"GATEWAY_PROCESSES": "four"}, "GATEWAY_PROCESSES", "must be an integer"),
    (
        {"GATEWAY_PROCESSES": "4", "WEBSOCKET_MAX_CONNECTIONS": "3"},
        "GATEWAY_PROCESSES",
        "at most WEBSOCKET_MAX_CONNECTIONS (3)",
    ),
    ({"REDIS_MAX_CONNECTIONS": "2"}, "REDIS_MAX_CONNECTIONS", "between 4 and 100000"),
    ({"REDIS_MAX_CONNECTIONS": "lots"}, "REDIS_MAX_CONNECTIONS", "must be an integer"),
]


@pytest.mark.parametrize(("overrides", "variable", "problem"), BAD)
def test_bad_variable_named_in_error(
    overrides: dict[str, str], variable: str, problem: str
) -> None:
    env = {**STANDALONE, **overrides}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")
    assert problem in str(info.value)


def test_redis_url_error_does_not_echo_secret() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"REDIS_URL": "http://:topsecret@host"})
    assert "topsecret" not in str(info.value)

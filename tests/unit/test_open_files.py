"""Open-file limits follow from each phase's settings: what each server needs, and the
local runner's refusal, naming the setting, when the inherited hard limit is below it."""

from __future__ import annotations

import pytest

from scaling.local.limits import shortfalls
from scaling.local.topology import local_spec, local_topology
from scaling.render.limits import open_files
from scaling.stackconfig import parse


def spec_of(phase: str):  # type: ignore[no-untyped-def]
    return parse({"sikka:phase": phase}, stack=phase)


def test_each_server_needs_what_its_settings_hold() -> None:
    spec = spec_of("growth")
    nginx = open_files(spec, "nginx", "proxy")
    assert nginx is not None and nginx.files == spec.nginx.worker_rlimit_nofile == 4608
    gateway = open_files(spec, "gateway", "gateway")
    # 1,000 connections + 25 % + 1,024 for Redis, listeners and logs.
    # 1,000 connections, a publish pool of 1,000 (REDIS_MAX_CONNECTIONS), 256 spare.
    assert gateway is not None and gateway.files == 1000 + 1000 + 256
    redis = open_files(spec, "redis", "master")
    assert redis is not None and redis.files == spec.redis.max_clients + 32
    pooler = open_files(spec, "postgres", "pooler")
    assert pooler is not None and pooler.files == 1000 + 40 + 40 + 2 * 5 + 64
    assert open_files(spec, "redis", "sentinel") is None
    assert open_files(spec, "postgres", "primary") is None


def test_local_up_refuses_a_low_hard_limit_naming_each_setting() -> None:
    spec = local_spec(spec_of("growth"))
    lines = shortfalls(spec, local_topology(spec), 2048)
    # PgBouncer's 1,154 fit; Nginx's 4,608, Redis's 4,032, HAProxy's 2,864 (named after
    # pooler.maxClientConn, most of its maxconn) and the gateways' 2,256 do not.
    assert sorted(line.split(":")[1] for line in lines) == [
        "gateway.connectionsPerReplica",
        "nginx.workerConnections",
        "pooler.maxClientConn",
        "redis.maxClients",
    ]
    haproxy = next(line for line in lines if "pooler.maxClientConn" in line)
    assert "haproxy-0, haproxy-1 need(s) 2864 open files" in haproxy
    nginx_line = next(line for line in lines if "nginx.workerConnections" in line)
    assert nginx_line.startswith("sikka:nginx.workerConnections: nginx need(s) 4608 open files")
    assert "hard limit of 2048" in nginx_line
    assert shortfalls(spec, local_topology(spec), 1_000_000) == []


@pytest.mark.parametrize("phase", ["launch", "growth", "scale"])
def test_every_phase_fits_a_common_hard_limit(phase: str) -> None:
    """Every phase runs locally under a hard limit of 65,536 (systemd's default
    DefaultLimitNOFILE hard limit is 524,288; many shells give 65,536 or more)."""
    spec = local_spec(spec_of(phase))
    assert shortfalls(spec, local_topology(spec), 65_536) == []


def test_docker_compose_sets_each_servers_nofile() -> None:
    import yaml

    from scaling.docker.compose import render_compose
    from scaling.topology import build_topology

    spec = spec_of("growth")
    rendered = yaml.safe_load(render_compose(build_topology(spec)))["services"]
    # Named by container (sikka-growth-<node>); read here by node.
    services = {service["hostname"]: service for service in rendered.values()}
    assert services["nginx"]["ulimits"] == {"nofile": {"soft": 4608, "hard": 4608}}
    for name in ("gateway-0", "gateway-1"):
        # 1,000 connections per gateway, a publish pool of 1,000 and 256 spare.
        assert services[name]["ulimits"]["nofile"]["soft"] == 1000 + 1000 + 256
    assert services["redis-0"]["ulimits"]["nofile"]["hard"] == spec.redis.max_clients + 32
    # Servers that size themselves keep the Docker default.
    assert "ulimits" not in services["etcd-0"]


def test_the_gateway_needs_what_the_platforms_give_it() -> None:
    from gateway.limits import needed_open_files
    from scaling.render.gateway_env import redis_max_connections

    spec = spec_of("scale")
    need = open_files(spec, "gateway", "gateway")
    assert need is not None
    # The platforms give at least what the gateway asks for itself (a cluster's pool is
    # per master, so the platform figure counts it once per master).
    own = needed_open_files(spec.gateway.connections_per_replica, redis_max_connections(spec))
    assert need.files == own + redis_max_connections(spec) * (spec.redis.masters - 1)

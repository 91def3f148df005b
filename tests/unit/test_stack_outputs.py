"""`check` from a deployed stack's outputs: the exports of every stack, as Pulumi's mock
engine resolves them from __main__.py, map to the Endpoints the direct check probes. A change
in the exports' shape breaks these tests, not a deployed check."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from support.pulumi_stack import run_stack
from test_exports_resolve import CASES

from scaling.metrics import direct
from scaling.metrics.endpoints import (
    Endpoints,
    EndpointsError,
    HostPort,
    from_stack_outputs,
    platform_network,
)
from scaling.model import PlatformKind
from scaling.topology.network import CLUSTER_DOMAIN


def _password(uri: str) -> str:
    """The password between "://user:" and "@" of a connection URI."""
    return uri.split("://", 1)[1].rsplit("@", 1)[0].split(":", 1)[1]


def _mapped(stack: str, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any], Endpoints]:
    run = run_stack(stack, overrides)
    spec = run.outputs["spec"]
    return spec, run.exports, from_stack_outputs(run.exports, spec, stack)


def _probed_hosts(e: Endpoints) -> set[str]:
    from urllib.parse import urlsplit

    hosts = {hp.host for hp in (*e.postgres, *e.poolers, *e.redis, *e.sentinels)}
    urls = [*(u for g in e.gateways for u in g), *e.nginx]
    return hosts | {urlsplit(u).hostname or "" for u in urls}


@pytest.mark.parametrize(("stack", "overrides"), CASES, ids=lambda v: str(v))
def test_every_stack_maps_to_endpoints(stack: str, overrides: dict[str, Any]) -> None:
    spec, exports, e = _mapped(stack, overrides)
    # Credentials: the application's role, the passwords of the secret URIs.
    assert (e.postgres_user, e.database) == (spec.postgres.user, spec.postgres.database)
    assert e.postgres_password == _password(exports["database_uri"])
    assert e.redis_password == _password(exports["redis_uri"])
    assert e.postgres_password and e.redis_password
    # Postgres: the read-write Service first, then the read-only one when there are replicas.
    assert [str(hp) for hp in e.postgres] == [
        exports["postgres"]["primary"],
        *exports["postgres"]["replicas"],
    ]
    assert len(e.postgres) == 1 + (spec.phase.value != "launch")
    assert bool(e.poolers) == spec.pooler.enabled
    # Redis: every data node where the stack exports them; sentinels in Sentinel mode.
    mode = spec.redis.mode
    if mode == "cluster":
        assert len(e.redis) == spec.redis.masters * (1 + spec.redis.replicas_per_master)
    elif mode == "sentinel":
        assert (len(e.redis), len(e.sentinels)) == (0, spec.redis.sentinels)
        assert any("--redis HOST:PORT" in n for n in e.notes)
    else:
        assert (len(e.redis), e.sentinels) == (1, ())
    # Gateways and Nginx's status: named on Docker; on Kubernetes the HPA's pods are not.
    if spec.platform == PlatformKind.DOCKER:
        assert len(e.gateways) == spec.gateway.replicas
        assert {len(urls) for urls in e.gateways} == {spec.gateway.processes}
        assert all(u.endswith("/metrics") for urls in e.gateways for u in urls)
        assert len(e.nginx) == 1 and e.nginx[0].endswith("/nginx_status")
    else:
        assert (e.gateways, e.nginx) == ((), ())
        assert any("--gateway-metrics URL" in n for n in e.notes)
    # Every part is named on the platform's network, which the note names with --prometheus.
    hosts = _probed_hosts(e)
    assert hosts and hosts == e.private_hosts
    assert e.private_network == platform_network(spec)
    if spec.platform == PlatformKind.KUBERNETES:
        assert all(h.endswith(f".svc.{CLUSTER_DOMAIN}") for h in hosts)
        assert spec.namespace in e.private_network
    else:
        assert spec.docker_network in e.private_network
    said = [n for n in e.notes if e.private_network in n]
    assert len(said) == 1 and "--prometheus URL" in said[0]
    # The passwords stay out of the record's repr and out of every note.
    for secret in (e.postgres_password, e.redis_password):
        assert secret not in repr(e)
        assert not any(secret in n for n in e.notes)


def test_launch_on_docker_names_each_part() -> None:
    spec, _, e = _mapped("launch", {})
    assert e.postgres == (HostPort("postgres", 5432),)
    assert e.poolers == ()
    assert e.redis == (HostPort("redis", 6379),)
    assert e.gateways == ((f"http://gateway-0:{spec.gateway.metrics_port}/metrics",),)
    assert e.nginx == ("http://nginx:8081/nginx_status",)
    assert e.private_network == "the Docker network 'sikka-launch'"
    assert e.host is True  # Docker's provider runs on this machine's daemon by default


def test_outputs_of_another_phase_are_refused() -> None:
    spec = run_stack("launch").outputs["spec"]
    growth = run_stack("growth").exports
    with pytest.raises(
        EndpointsError, match="phase is 'growth', but the stack file is of the launch"
    ):
        from_stack_outputs(growth, spec, "growth")


def test_a_hidden_secret_is_named_not_shown() -> None:
    run = run_stack("launch")
    exports = {**run.exports, "database_uri": "[secret]"}
    with pytest.raises(EndpointsError, match=r"database_uri is not a URI .*--show-secrets"):
        from_stack_outputs(exports, run.outputs["spec"], "launch")


def test_a_missing_output_is_named() -> None:
    run = run_stack("growth")
    exports = {**run.exports, "redis": {"redis_mode": "sentinel"}}
    with pytest.raises(
        EndpointsError, match=r"stack outputs: redis\.sentinel_endpoints is missing"
    ):
        from_stack_outputs(exports, run.outputs["spec"], "growth")


@pytest.mark.parametrize(("stack", "overrides"), [CASES[1], CASES[3]], ids=["docker", "k8s"])
def test_private_parts_are_unreachable_with_the_reason(
    stack: str, overrides: dict[str, Any]
) -> None:
    spec, _, e = _mapped(stack, overrides)
    if any(direct._resolves(h) for h in e.private_hosts):
        pytest.skip("this machine resolves the platform's names: it is inside its network")
    measured = direct.measure(e, spec)
    readings = [r for r in measured.sample.readings if r.tier != "host"]
    assert {r.instance.split("://")[-1].split(":")[0] for r in readings} <= e.private_hosts
    assert len(readings) == len(e.postgres) + len(e.poolers) + len(e.redis) + len(e.gateways) + len(
        e.nginx
    )
    for r in readings:
        assert r.value is None
        assert r.error and f"on {e.private_network}, reachable only from inside it" in r.error


def test_a_private_name_that_resolves_is_probed() -> None:
    """Inside the platform's network its names resolve: the part is measured, and a refusal
    is the part's own reason, not the network's."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    e = Endpoints(
        stack="launch",
        redis=(HostPort("localhost", port),),
        private_hosts=frozenset({"localhost"}),
        private_network="the Docker network 'sikka-launch'",
        host=False,
    )
    [reading] = direct.measure(e).sample.readings
    assert reading.value is None and reading.error
    assert "reachable only from inside it" not in reading.error

"""docker-compose.yml describes the same nodes the Docker stack registers."""

from __future__ import annotations

import pytest
import yaml
from support.pulumi_stack import run_stack

from scaling.docker.compose import render_compose
from scaling.model import PhaseSpec
from scaling.stackconfig import parse
from scaling.topology import build_topology


def spec_of(stack: str) -> PhaseSpec:
    return parse({"sikka:phase": stack}, stack=stack)


def by_node(document: dict) -> dict:
    """The compose document with its services (and what they wait for) named by node, as
    the tests below read them; the file names them by container (sikka-<stack>-<node>)."""
    names = {key: service["hostname"] for key, service in document["services"].items()}
    services = {}
    for key, service in document["services"].items():
        if "depends_on" in service:
            service = {
                **service,
                "depends_on": {names[k]: v for k, v in service["depends_on"].items()},
            }
        services[names[key]] = service
    return {**document, "services": services}


def compose_of(stack: str, project: str | None = None) -> dict:
    return by_node(yaml.safe_load(render_compose(build_topology(spec_of(stack)), project)))


def unescaped(parts: list[str] | None) -> list[str] | None:
    """A compose list as the container sees it (compose turns $$ into $)."""
    return [part.replace("$$", "$") for part in parts] if parts else None


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_compose_matches_the_registered_containers(stack: str) -> None:
    compose = compose_of(stack)
    run = run_stack(stack)
    registered = {r.inputs["hostname"]: r for r in run.of_type("docker:index/container:Container")}
    assert set(compose["services"]) == set(registered)
    pulled = {r.inputs["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")}
    built = {r.inputs["imageName"]: r for r in run.of_type("docker:index/image:Image")}
    assert set(built) == {"ghcr.io/sikka-scaling/gateway:0.1.0"} | (
        {"ghcr.io/sikka-scaling/postgres-patroni:0.1.0"} if stack == "growth" else set()
    )
    with_builds = compose_of(stack, ".")
    for name, service in compose["services"].items():
        assert service["image"] in (set(built) | pulled), name
        resource = registered[name]
        assert service["stop_signal"] == resource.inputs["stopSignal"], name
        assert service["stop_grace_period"] == f"{int(resource.inputs['stopTimeout'])}s", name
        assert unescaped(service.get("entrypoint")) == resource.inputs.get("entrypoints"), name
        assert unescaped(service.get("command")) == resource.inputs.get("command"), name
        health = resource.inputs.get("healthcheck")
        assert unescaped(service.get("healthcheck", {}).get("test")) == (
            health and health["tests"]
        ), name
        # Compose builds what the stack builds, from the same folder with the same arguments.
        image = built.get(service["image"])
        build = with_builds["services"][name].get("build")
        if image is None:
            assert build is None, name
        else:
            assert image.inputs["build"]["context"].endswith("/" + build["context"]), name
            assert image.inputs["build"].get("args") == build.get("args"), name
        aliases = resource.inputs["networksAdvanced"][0]["aliases"]
        assert service["networks"]["private"]["aliases"] == aliases, name
        assert service["container_name"] == resource.inputs["name"], name
    volumes = {v["name"] for v in compose["volumes"].values()}
    assert volumes == {r.inputs["name"] for r in run.of_type("docker:index/volume:Volume")}


def test_compose_builds_the_gateway_like_the_stack() -> None:
    compose = compose_of("launch", "../..")
    assert compose["services"]["gateway-0"]["build"] == {"context": "../../gateway"}
    assert "build" not in compose["services"]["nginx"]
    assert "build" not in compose["services"]["postgres-0"]  # launch: the official image


def test_compose_builds_the_patroni_image_from_the_phase_postgres() -> None:
    services = compose_of("growth", "../..")["services"]
    expected = {
        "context": "../../images/postgres-patroni",
        "args": {"POSTGRES_IMAGE": spec_of("growth").postgres.image},
    }
    for index in range(3):
        member = services[f"postgres-{index}"]
        assert member["image"] == "ghcr.io/sikka-scaling/postgres-patroni:0.1.0"
        assert member["build"] == expected
    assert "build" not in services["haproxy-0"] and "build" not in services["etcd-0"]
    # Without the project's place, compose pulls the image instead.
    assert "build" not in compose_of("growth")["services"]["postgres-0"]


def test_compose_references_secrets_never_values() -> None:
    compose = compose_of("growth")
    member = compose["services"]["postgres-0"]["environment"]
    # Patroni reads its passwords from PATRONI_*, its role script from the same secrets under
    # its own names; every one of them comes from the environment compose runs in.
    assert member["PATRONI_SUPERUSER_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert member["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert member["PATRONI_REPLICATION_PASSWORD"].startswith("${REPLICATION_PASSWORD:?")
    assert member["PATRONI_REWIND_PASSWORD"].startswith("${PATRONI_REWIND_PASSWORD:?")
    assert member["PATRONI_RESTAPI_PASSWORD"].startswith("${PATRONI_RESTAPI_PASSWORD:?")
    assert member["DATABASE_PASSWORD_SCRAM"].startswith("${DATABASE_PASSWORD_SCRAM:?")
    assert member["MONITORING_PASSWORD_SCRAM"].startswith("${MONITORING_PASSWORD_SCRAM:?")
    assert "DATABASE_PASSWORD" not in member and "MONITORING_PASSWORD" not in member
    assert member["PATRONI_RESTAPI_USERNAME"] == "patroni"
    # Shell variables meant for the container are escaped from compose's interpolation.
    for name in ("pgbouncer-0", "pgbouncer-1"):
        pgbouncer = compose["services"][name]
        assert '"$$DATABASE_PASSWORD_SCRAM"' in pgbouncer["entrypoint"][2]
        assert '"$$PGBOUNCER_ADMIN_PASSWORD_SCRAM"' in pgbouncer["entrypoint"][2]
        assert '"$$MONITORING_PASSWORD_SCRAM"' in pgbouncer["entrypoint"][2]
        assert set(pgbouncer["environment"]) == {
            "DATABASE_PASSWORD_SCRAM",
            "PGBOUNCER_ADMIN_PASSWORD_SCRAM",
            "MONITORING_PASSWORD_SCRAM",
        }
    for name in ("haproxy-0", "haproxy-1", "etcd-0", "etcd-1", "etcd-2"):
        assert "environment" not in compose["services"][name], name
    # The members answer to their own names; clients reach them through the routers.
    assert compose["services"]["postgres-1"]["networks"]["private"] == {"aliases": ["postgres-1"]}
    assert compose["services"]["haproxy-0"]["networks"]["private"]["aliases"] == [
        "haproxy-0",
        "postgres",
        "postgres-replicas",
    ]
    subnet = compose["networks"]["private"]["ipam"]["config"][0]["subnet"]
    assert subnet.startswith("10.213.") and subnet.endswith(".0/24")


def test_compose_starts_members_one_after_another() -> None:
    services = compose_of("growth")["services"]
    etcd = ["etcd-0", "etcd-1", "etcd-2"]
    for name in etcd:  # a majority must run before any is healthy: they start together
        assert "depends_on" not in services[name], name
    assert list(services["postgres-0"]["depends_on"]) == etcd
    assert list(services["postgres-2"]["depends_on"]) == [*etcd, "postgres-0", "postgres-1"]
    assert {c["condition"] for c in services["postgres-2"]["depends_on"].values()} == {
        "service_healthy"
    }
    assert list(services["haproxy-1"]["depends_on"]) == ["postgres-0", "postgres-1", "postgres-2"]
    assert list(services["pgbouncer-0"]["depends_on"]) == ["haproxy-0", "haproxy-1"]
    assert services["postgres-0"]["stop_signal"] == "SIGTERM"
    assert services["postgres-0"]["stop_grace_period"] == "120s"
    assert services["redis-1"]["stop_grace_period"] == "120s"
    # etcd's image has no shell: its check runs etcdctl itself.
    assert services["etcd-0"]["healthcheck"]["test"][:2] == ["CMD", "etcdctl"]
    volumes = compose_of("growth")["volumes"]
    assert volumes["etcd-1-data"] == {"name": "sikka-growth-etcd-1-data"}
    assert services["etcd-1"]["volumes"] == ["etcd-1-data:/var/lib/etcd"]
    assert services["postgres-1"]["volumes"][0] == "postgres-1-data:/var/lib/postgresql/data"

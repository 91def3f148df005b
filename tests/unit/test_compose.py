"""docker-compose.yml describes the same nodes the Docker stack registers."""

from __future__ import annotations

import pytest
import yaml
from support.pulumi_stack import run_stack

from scaling.docker.compose import render_compose
from scaling.stackconfig import parse
from scaling.topology import build_topology


def compose_of(stack: str, build: str | None = None) -> dict:
    spec = parse({"sikka:phase": stack}, stack=stack)
    return yaml.safe_load(render_compose(build_topology(spec), build))


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_compose_matches_the_registered_containers(stack: str) -> None:
    compose = compose_of(stack)
    run = run_stack(stack)
    registered = {r.inputs["hostname"]: r for r in run.of_type("docker:index/container:Container")}
    assert set(compose["services"]) == set(registered)
    pulled = {r.inputs["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")}
    built = {r.inputs["imageName"] for r in run.of_type("docker:index/image:Image")}
    assert built == {"ghcr.io/sikka-scaling/gateway:0.1.0"}
    for name, service in compose["services"].items():
        assert service["image"] in (built | pulled), name
        resource = registered[name]
        assert service["stop_signal"] == resource.inputs["stopSignal"], name
        aliases = resource.inputs["networksAdvanced"][0]["aliases"]
        assert (service["networks"]["private"] or {}).get("aliases", []) == aliases[1:], name
    volumes = {v["name"] for v in compose["volumes"].values()}
    assert volumes == {r.inputs["name"] for r in run.of_type("docker:index/volume:Volume")}


def test_compose_builds_the_gateway_like_the_stack() -> None:
    compose = compose_of("launch", "../../gateway")
    assert compose["services"]["gateway-0"]["build"] == {"context": "../../gateway"}
    assert "build" not in compose["services"]["nginx"]


def test_compose_references_secrets_never_values() -> None:
    compose = compose_of("growth")
    primary = compose["services"]["postgres-0"]["environment"]
    # The image's superuser is postgres, with its own secret; the application role's
    # password is another variable.
    assert primary["POSTGRES_USER"] == "postgres"
    assert primary["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert primary["DATABASE_PASSWORD"].startswith("${DATABASE_PASSWORD:?")
    # Shell variables meant for the container are escaped from compose's interpolation.
    pgbouncer = compose["services"]["pgbouncer"]
    assert '"$$DATABASE_PASSWORD"' in pgbouncer["entrypoint"][2]
    assert '"$$PGBOUNCER_ADMIN_PASSWORD"' in pgbouncer["entrypoint"][2]
    assert set(pgbouncer["environment"]) == {"DATABASE_PASSWORD", "PGBOUNCER_ADMIN_PASSWORD"}
    assert compose["services"]["postgres-1"]["networks"]["private"]["aliases"] == [
        "postgres-replicas"
    ]
    subnet = compose["networks"]["private"]["ipam"]["config"][0]["subnet"]
    assert subnet.startswith("10.213.") and subnet.endswith(".0/24")


def test_compose_starts_replicas_one_after_another() -> None:
    services = compose_of("growth")["services"]
    assert list(services["postgres-2"]["depends_on"]) == ["postgres-0", "postgres-1"]
    assert services["postgres-0"]["stop_signal"] == "SIGINT"
    assert services["redis-1"]["stop_grace_period"] == "120s"

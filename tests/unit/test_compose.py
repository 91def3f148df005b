"""docker-compose.yml describes the same containers the Docker stack registers."""

from __future__ import annotations

import pytest
import yaml
from support.pulumi_stack import run_stack

from scaling.containers import build_containers
from scaling.render.compose import render_compose
from scaling.stackconfig import parse


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_compose_matches_the_registered_containers(stack: str) -> None:
    spec = parse({"sikka:phase": stack}, stack=stack)
    compose = yaml.safe_load(render_compose(spec, build_containers(spec)))
    run = run_stack(stack)
    registered = {r.inputs["hostname"]: r for r in run.of_type("docker:index/container:Container")}
    assert set(compose["services"]) == set(registered)
    pulled = {r.inputs["name"] for r in run.of_type("docker:index/remoteImage:RemoteImage")}
    built = {r.inputs["imageName"] for r in run.of_type("docker:index/image:Image")}
    assert built == {"ghcr.io/sikka-scaling/gateway:0.1.0"}
    for name, service in compose["services"].items():
        assert service["image"] in (built | pulled), name


def test_compose_builds_the_gateway_like_the_stack() -> None:
    spec = parse({"sikka:phase": "launch"}, stack="launch")
    compose = yaml.safe_load(render_compose(spec, build_containers(spec), "../../gateway"))
    assert compose["services"]["gateway-1"]["build"] == {"context": "../../gateway"}
    assert "build" not in compose["services"]["nginx"]


def test_compose_references_secrets_never_values() -> None:
    spec = parse({"sikka:phase": "growth"}, stack="growth")
    text = render_compose(spec, build_containers(spec))
    compose = yaml.safe_load(text)
    primary = compose["services"]["postgres-primary"]["environment"]
    assert primary["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    # Shell variables meant for the container are escaped from compose's interpolation.
    pgbouncer = compose["services"]["pgbouncer"]["entrypoint"][2]
    assert '"$$POSTGRES_PASSWORD"' in pgbouncer
    assert compose["services"]["postgres-replica-1"]["networks"]["private"]["aliases"] == [
        "postgres-replicas"
    ]
    assert compose["networks"]["private"]["ipam"]["config"] == [{"subnet": "172.28.0.0/16"}]

"""`sikka:gateway.auth`, `sikka:gateway.metricsPort` and the `gateway-jwt-secret`: from the
stack file through the topology to Docker (compose and the mock-engine stack)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from support.pulumi_stack import run_stack

from scaling.docker.compose import render_compose
from scaling.issues import ConfigError
from scaling.model import Phase, PhaseSpec
from scaling.render.env import required_secrets
from scaling.stackconfig import parse
from scaling.topology import build_topology


def spec_with(phase: str = "launch", **gateway: Any) -> PhaseSpec:
    values: dict[str, Any] = {"sikka:phase": phase}
    if gateway:
        values["sikka:gateway"] = gateway
    return parse(values, stack=phase)


def issues(**gateway: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        spec_with(**gateway)
    return [f"{i.key}: {i.message}" for i in caught.value.issues]


@pytest.mark.parametrize("phase", [p.value for p in Phase])
def test_required_with_a_shared_secret_by_default(phase: str) -> None:
    spec = spec_with(phase)
    auth = spec.gateway.auth
    assert (auth.mode, auth.jwks_url, auth.allowed_origins) == ("required", None, ())
    assert auth.shared_secret
    assert "gateway-jwt-secret" in required_secrets(spec)
    for node in build_topology(spec).group("gateway"):
        assert node.secret_env["GATEWAY_JWT_SECRET"] == "gateway-jwt-secret"
        assert node.env["GATEWAY_AUTH_MODE"] == "required"
        assert node.ports == {"http": 8080, "metrics": 9102}
        assert node.env["GATEWAY_METRICS_PORT"] == "9102"
        assert "/livez" in (node.health.command or "")


def test_disabled_is_accepted_when_written_and_needs_no_key() -> None:
    spec = spec_with(auth={"mode": "disabled", "allowedOrigins": ["*"]})
    assert "gateway-jwt-secret" not in required_secrets(spec)
    (node,) = build_topology(spec).group("gateway")
    assert "GATEWAY_JWT_SECRET" not in node.secret_env
    assert node.env["GATEWAY_AUTH_MODE"] == "disabled"
    assert node.env["GATEWAY_ALLOWED_ORIGINS"] == "*"


def test_jwks_replaces_the_shared_secret() -> None:
    spec = spec_with(
        auth={
            "jwksUrl": "https://id.example.com/.well-known/jwks.json",
            "issuer": "https://id.example.com/",
            "audience": "sikka",
            "allowedOrigins": ["https://app.example.com", "http://localhost:3000"],
        }
    )
    assert not spec.gateway.auth.shared_secret
    assert "gateway-jwt-secret" not in required_secrets(spec)
    (node,) = build_topology(spec).group("gateway")
    assert "GATEWAY_JWT_SECRET" not in node.secret_env
    assert node.env["GATEWAY_JWKS_URL"] == "https://id.example.com/.well-known/jwks.json"
    assert node.env["GATEWAY_JWT_ISSUER"] == "https://id.example.com/"
    assert node.env["GATEWAY_JWT_AUDIENCE"] == "sikka"
    assert node.env["GATEWAY_ALLOWED_ORIGINS"] == "https://app.example.com,http://localhost:3000"


def test_bad_auth_settings_are_named_by_key() -> None:
    assert issues(auth={"mode": "optional"}) == [
        "sikka:gateway.auth.mode: input should be 'required' or 'disabled' (got 'optional')"
    ]
    assert issues(auth={"jwksUrl": "http://id.example.com/jwks"}) == [
        "sikka:gateway.auth.jwksUrl: must be an https:// URL (plain http only on loopback) "
        "(got 'http://id.example.com/jwks')"
    ]
    assert issues(auth={"allowedOrigins": ["app.example.com"]}) == [
        "sikka:gateway.auth.allowedOrigins.0: must be '*' or scheme://host[:port], such as "
        "'https://app.example.com' (got 'app.example.com')"
    ]
    assert issues(auth={"mode": "disabled", "jwksUrl": "https://id.example.com/j"}) == [
        "sikka:gateway.auth.jwksUrl: has no effect with gateway.auth.mode 'disabled'; remove "
        "it or set mode 'required'"
    ]
    assert issues(auth={"allowedOrigins": ["*", "https://a.example.com"]}) == [
        "sikka:gateway.auth.allowedOrigins: '*' already allows every origin; list it alone"
    ]
    assert issues(metricsPort=8080) == [
        "sikka:gateway.metricsPort: must differ from gateway.port (8080)"
    ]
    assert issues(auth={"secret": "x"}) == ["sikka:gateway.auth.secret: unknown key"]


def test_the_key_itself_is_a_secret_key_only() -> None:
    values = {"sikka:phase": "launch", "sikka:gatewayJwtSecret": "in-plain-text"}
    with pytest.raises(ConfigError) as caught:
        parse(values, stack="launch")
    assert [f"{i.key}: {i.message}" for i in caught.value.issues] == [
        "sikka:gatewayJwtSecret: must be a secret: `pulumi config set --secret "
        "sikka:gatewayJwtSecret ...` (or leave it unset to generate one)"
    ]
    parse(values, stack="launch", secret_keys={"sikka:gatewayJwtSecret"})


def test_compose_refers_to_the_key_and_publishes_no_metrics() -> None:
    spec = spec_with("growth")
    compose = yaml.safe_load(render_compose(build_topology(spec)))
    for name in ("gateway-0", "gateway-1"):
        service = compose["services"][f"sikka-growth-{name}"]
        assert service["environment"]["GATEWAY_JWT_SECRET"].startswith("${GATEWAY_JWT_SECRET:?")
        assert "ports" not in service  # /metrics stays on the private network
        assert "/livez" in service["healthcheck"]["test"][1]
    published = [s for s in compose["services"].values() if "ports" in s]
    assert [s["hostname"] for s in published] == ["nginx"]


def test_docker_stack_passes_a_supplied_key_as_a_secret_env() -> None:
    key = "k" * 48
    run = run_stack("launch", secret_values={"sikka:gatewayJwtSecret": key})
    (gateway,) = [
        r
        for r in run.of_type("docker:index/container:Container")
        if r.inputs["name"] == "sikka-launch-gateway-0"
    ]
    env = dict(item.split("=", 1) for item in gateway.inputs["envs"])
    assert env["GATEWAY_JWT_SECRET"] == key
    assert "envs" in gateway.secret_paths()
    # Still generated: the application role's, the superuser's, Redis's and the monitoring
    # role's passwords.
    generated = {r.name for r in run.of_type("random:index/randomPassword:RandomPassword")}
    assert generated == {
        "sikka-launch-secrets-postgres-password",
        "sikka-launch-secrets-postgres-superuser-password",
        "sikka-launch-secrets-redis-password",
        "sikka-launch-secrets-monitoring-password",
    }

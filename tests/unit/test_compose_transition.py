"""docker-compose.yml of a transition's stacks matches what the Docker stack registers: the
source's transition network, the target's external one, no Sentinel while following, the
cut-over's guards and the order they impose (scaling.docker.compose)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from support.pulumi_stack import StackRun, run_stack

from scaling.bundle import render_bundle
from scaling.cli import main
from scaling.docker.compose import render_compose
from scaling.exports import transition_source
from scaling.model import PhaseSpec
from scaling.stackconfig import parse
from scaling.topology import build_topology

SOURCE = "organization/sikka-scaling/launch"
FOLLOW = {"sikka:promoteFrom": "launch"}
CUTOVER = {**FOLLOW, "sikka:promoteCutover": True}
TO = {"sikka:promoteTo": "growth"}


def spec(stack: str, extra: dict[str, Any]) -> PhaseSpec:
    return parse({"sikka:phase": stack, **extra}, stack=stack)


def source_output() -> dict[str, Any]:
    return transition_source(build_topology(spec("launch", TO)))


def compose(stack: str, extra: dict[str, Any], source: dict[str, Any] | None = None) -> dict:
    text = render_compose(build_topology(spec(stack, extra)), None, source)
    return yaml.safe_load(text)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def runs() -> dict[str, StackRun]:
    source = run_stack("launch", TO)
    refs = {SOURCE: source.exports}
    return {
        "source": source,
        "following": run_stack("growth", FOLLOW, references=refs),
        "cutover": run_stack("growth", CUTOVER, references=refs),
    }


def containers(run: StackRun) -> dict[str, Any]:
    return {r.inputs["name"]: r for r in run.of_type("docker:index/container:Container")}


def unescaped(parts: list[str] | None) -> list[str] | None:
    return [part.replace("$$", "$") for part in parts] if parts else None


@pytest.mark.parametrize(
    ("stack", "extra", "run"),
    [("launch", TO, "source"), ("growth", FOLLOW, "following"), ("growth", CUTOVER, "cutover")],
)
def test_the_services_and_their_networks_are_the_stack_s_containers(
    stack: str, extra: dict[str, Any], run: str, runs: dict[str, StackRun]
) -> None:
    document = compose(stack, extra, source_output() if extra != TO else None)
    registered = containers(runs[run])
    assert set(document["services"]) == set(registered)
    networks = {r.inputs["name"]: r for r in runs[run].of_type("docker:index/network:Network")}
    for name, service in document["services"].items():
        resource = registered[name]
        assert service["container_name"] == name
        assert unescaped(service.get("entrypoint")) == resource.inputs.get("entrypoints"), name
        joined = resource.inputs["networksAdvanced"]
        keys = list(service["networks"])
        assert len(keys) == len(joined), name
        for key, network in zip(keys, joined, strict=True):
            assert document["networks"][key]["name"] == network["name"], name
            aliases = (service["networks"][key] or {}).get("aliases", [])
            assert aliases == network["aliases"], name
    own = {key: n for key, n in document["networks"].items() if not n.get("external")}
    assert {n["name"] for n in own.values()} == set(networks)
    for network in own.values():
        subnet = networks[network["name"]].inputs["ipamConfigs"][0]["subnet"]
        assert network["ipam"]["config"][0]["subnet"] == subnet


def test_the_source_creates_its_transition_network() -> None:
    document = compose("launch", TO)
    assert document["networks"]["transition"]["name"] == "sikka-launch-transition"
    assert "external" not in document["networks"]["transition"]
    joined = sorted(n for n, s in document["services"].items() if "transition" in s["networks"])
    assert joined == ["sikka-launch-postgres-0", "sikka-launch-redis-0"]
    # Only there may the superuser log in over the network: the cut-over stops its writes.
    hba = render_bundle(spec("launch", TO))["pg_hba.conf"]
    subnet = document["networks"]["transition"]["ipam"]["config"][0]["subnet"]
    assert f"host    postgres     postgres      {subnet}" in hba
    assert "postgres      10." not in render_bundle(spec("launch", {}))["pg_hba.conf"]


def test_the_following_target_joins_the_source_network_and_holds_the_sentinels_back() -> None:
    document = compose("growth", FOLLOW, source_output())
    assert document["networks"]["source-transition"] == {
        "name": "sikka-launch-transition",
        "external": True,
    }
    services = document["services"]
    assert not any("sentinel" in name for name in services)
    master = services["sikka-growth-redis-0"]
    assert "--replicaof sikka-launch-redis-0 6379" in master["entrypoint"][2]
    assert master["networks"]["source-transition"] is None
    assert not any("promote" in name for name in services)


def test_the_cutover_runs_the_guards_before_the_master_is_replaced() -> None:
    services = compose("growth", CUTOVER, source_output())["services"]
    postgres, redis = (
        services["sikka-growth-postgres-promote"],
        services["sikka-growth-redis-promote"],
    )
    assert "restart" not in postgres and "restart" not in redis
    done = {"condition": "service_completed_successfully"}
    assert services["sikka-growth-redis-0"]["depends_on"]["sikka-growth-redis-promote"] == done
    assert redis["depends_on"] == {"sikka-growth-postgres-promote": done}
    healthy = {"condition": "service_healthy"}
    assert postgres["depends_on"] == {f"sikka-growth-postgres-{i}": healthy for i in range(3)}
    assert "SOURCE_HOST=sikka-launch-postgres-0" in postgres["entrypoint"][2]
    # Passwords from the environment compose runs in, never in the file.
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert {f"sikka-growth-redis-sentinel-{i}" for i in range(3)} <= set(services)


def test_a_cluster_target_imports_the_keys_after_the_postgres_cutover() -> None:
    scale = {
        "sikka:platform": "docker",
        "sikka:autoscaling": {"enabled": False},
        "sikka:postgres": {"mode": "replicated"},
        "sikka:promoteForce": True,
        **CUTOVER,
    }
    source = transition_source(build_topology(spec("launch", {"sikka:promoteTo": "scale"})))
    services = compose("scale", scale, source)["services"]
    importer = services["sikka-scale-redis-import"]
    done = {"condition": "service_completed_successfully"}
    assert importer["depends_on"]["sikka-scale-postgres-promote"] == done
    assert "sikka-scale-redis-cluster-init" in importer["depends_on"]
    assert "restart" not in importer
    assert "SOURCE_HOST=sikka-launch-redis-0" in importer["entrypoint"][2]
    assert importer["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "source-transition" in importer["networks"]
    # No master to promote: a Redis Cluster's nodes are not replaced at the cut-over.
    assert "sikka-scale-redis-promote" not in services


def test_a_target_is_not_rendered_without_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Without it the placeholders stay (render refuses below); a source without the
    # network its target follows over is named.
    assert "@@source.docker.network@@" in render_compose(build_topology(spec("growth", FOLLOW)))
    plain = transition_source(build_topology(spec("launch", {})))
    with pytest.raises(ValueError, match=r"Pulumi\.growth\.yaml: sikka:promoteFrom: .*promoteTo"):
        render_compose(build_topology(spec("growth", FOLLOW)), None, plain)
    # The source's stack file beside the target's: its hosts fill the target's files.
    (tmp_path / "Pulumi.launch.yaml").write_text(
        "config:\n  sikka:phase: launch\n  sikka:promoteTo: growth\n"
    )
    target = tmp_path / "Pulumi.growth.yaml"
    target.write_text("config:\n  sikka:phase: growth\n  sikka:promoteFrom: launch\n")
    out = tmp_path / "out"
    assert main(["render", str(target), "--out", str(out)]) == 0
    member = yaml.safe_load((out / "patroni-postgres-0.yml").read_text())
    assert member["bootstrap"]["dcs"]["standby_cluster"]["host"] == "sikka-launch-postgres-0"
    assert "@@source" not in (out / "docker-compose.yml").read_text()
    # Without it, render says what is missing.
    (tmp_path / "Pulumi.launch.yaml").unlink()
    assert main(["render", str(target), "--out", str(out)]) == 1
    assert "Pulumi.launch.yaml, which must be beside this one" in capsys.readouterr().err

"""Transitions as stack config (scaling.promotion): the rules on sikka:promoteFrom,
promoteCutover, promoteForce and promoteTo, the source tokens, and what the renderers make of
a promotion (Patroni's standby_cluster, the promoter, Redis's replicaof, the source's
replication login). Pure: no Pulumi here (tests/unit/test_promotion_stacks.py runs the
program under the mock engine)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaling.issues import ConfigError
from scaling.model import Phase
from scaling.promotion import (
    direction,
    fill_tokens,
    full_reference,
    token,
    tokens_in,
)
from scaling.render.env import required_secrets
from scaling.stackconfig import load_stack_file, parse
from scaling.topology import build_topology
from scaling.topology.postgres import PROMOTER
from scaling.topology.redis import follow_source, transition_networks


def spec(stack: str, **values: Any) -> Any:
    phase = stack.split("-")[0]
    return parse({"sikka:phase": phase, **values}, stack=stack)


def problems(stack: str, **values: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        spec(stack, **values)
    return [f"{issue.key}: {issue.message}" for issue in caught.value.issues]


# --- the rules -------------------------------------------------------------------------------


def test_a_fresh_phase_has_no_promotion() -> None:
    growth = spec("growth")
    assert growth.promotion is None and growth.promote_to is None


@pytest.mark.parametrize("source", ["launch", "organization/sikka-scaling/launch", "acme/launch"])
def test_the_previous_phase_is_followed(source: str) -> None:
    promotion = spec("growth", **{"sikka:promoteFrom": source}).promotion
    assert promotion is not None
    assert (promotion.source, promotion.source_stack) == (source, "launch")
    assert promotion.source_phase == Phase.LAUNCH
    assert promotion.following and not promotion.cutover


def test_cutover_promotes() -> None:
    values = {"sikka:promoteFrom": "launch", "sikka:promoteCutover": True}
    promotion = spec("growth", **values).promotion
    assert promotion is not None and promotion.cutover and not promotion.following


def test_values_as_pulumi_config_set_writes_them() -> None:
    """`pulumi config set sikka:promoteCutover true` stores the text "true"."""
    values = {"sikka:promoteFrom": "launch", "sikka:promoteCutover": "true"}
    promotion = spec("growth", **values, **{"sikka:promoteForce": "false"}).promotion
    assert promotion is not None and promotion.cutover is True and promotion.force is False


def test_a_stack_cannot_follow_itself() -> None:
    (problem,) = problems("growth", **{"sikka:promoteFrom": "organization/sikka-scaling/growth"})
    assert problem.startswith("sikka:promoteFrom: names this stack itself ('growth')")


@pytest.mark.parametrize(
    ("stack", "source", "why"),
    [
        ("growth", "scale", "scale → growth goes backwards (launch → growth → scale)"),
        ("launch-eu", "growth", "growth → launch goes backwards"),
        ("growth-eu", "growth", "growth → growth stays in the same phase"),
    ],
)
def test_backwards_and_sideways_are_refused_unless_forced(
    stack: str, source: str, why: str
) -> None:
    values: dict[str, Any] = {"sikka:promoteFrom": source}
    if stack.startswith("launch"):  # a Docker launch runs no Patroni: move it to Kubernetes
        values["sikka:platform"] = "kubernetes"
    (problem,) = problems(stack, **values)
    assert problem.startswith(f"sikka:promoteFrom: {why}")
    assert problem.endswith("set sikka:promoteForce: true to do it anyway")
    forced = spec(stack, **values, **{"sikka:promoteForce": True}).promotion
    assert forced is not None and forced.force


def test_a_skip_is_refused_and_says_what_it_skips() -> None:
    found = problems("scale", **{"sikka:promoteFrom": "launch"})
    assert (
        "sikka:promoteFrom: launch → scale skips growth (launch → growth → scale); "
        "set sikka:promoteForce: true to do it anyway"
    ) in found


def test_direction_is_the_next_phase_only() -> None:
    assert direction(Phase.LAUNCH, Phase.GROWTH) is None
    assert direction(Phase.GROWTH, Phase.SCALE) is None
    assert direction(Phase.LAUNCH, Phase.SCALE) is not None
    assert direction(Phase.SCALE, Phase.LAUNCH) is not None


def test_a_source_named_after_no_phase_needs_its_stack_file_or_force() -> None:
    (problem,) = problems("growth", **{"sikka:promoteFrom": "prod"})
    assert "cannot tell the phase of stack 'prod'" in problem
    assert "Pulumi.prod.yaml is not beside this stack file" in problem
    forced = spec("growth", **{"sikka:promoteFrom": "prod", "sikka:promoteForce": True})
    assert forced.promotion is not None and forced.promotion.source_phase is None


def test_the_source_phase_comes_from_its_stack_file_beside(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.prod.yaml").write_text("config:\n  sikka:phase: launch\n")
    target = tmp_path / "Pulumi.growth.yaml"
    target.write_text("config:\n  sikka:phase: growth\n  sikka:promoteFrom: prod\n")
    promotion = load_stack_file(target).promotion
    assert promotion is not None and promotion.source_phase == Phase.LAUNCH
    # A source file holding the wrong phase is a wrong direction.
    (tmp_path / "Pulumi.prod.yaml").write_text("config:\n  sikka:phase: scale\n")
    with pytest.raises(ConfigError, match="scale → growth goes backwards"):
        load_stack_file(target)


def test_cutover_and_force_need_a_source() -> None:
    found = problems("growth", **{"sikka:promoteCutover": True, "sikka:promoteForce": True})
    assert found == [
        "sikka:promoteCutover: needs sikka:promoteFrom (the stack this one is promoted from); "
        "remove it for a fresh phase",
        "sikka:promoteForce: has no effect without sikka:promoteFrom",
    ]


def test_bad_values_are_named_with_their_key() -> None:
    found = problems(
        "growth",
        **{"sikka:promoteFrom": "no such/stack/name!", "sikka:promoteCutover": "yes"},
    )
    assert "sikka:promoteCutover: must be true or false (got 'yes')" in found
    assert any(p.startswith("sikka:promoteFrom: must be a stack name") for p in found)


def test_promotion_problems_come_with_every_other_problem() -> None:
    """Collected with the rest, before anything is registered, with the stack file's name."""
    with pytest.raises(ConfigError) as caught:
        spec("growth", **{"sikka:promoteFrom": "scale", "sikka:redis": {"sentinels": 2}})
    keys = {issue.key for issue in caught.value.issues}
    assert "sikka:promoteFrom" in keys and len(keys) >= 2
    assert str(caught.value).startswith(f"{len(caught.value.issues)} problem(s) in ")
    assert "Pulumi.growth.yaml: sikka:promoteFrom: scale → growth goes backwards" in str(
        caught.value
    )


def test_mechanisms_no_force_makes_possible_are_refused() -> None:
    # A Citus target follows a plain source by logical replication (rendered).
    citus = spec("scale", **{"sikka:promoteFrom": "growth"})
    assert citus.promotion is not None and citus.promotion.source_phase == Phase.GROWTH
    single = problems("launch-eu", **{"sikka:promoteFrom": "launch", "sikka:promoteForce": True})
    assert any("runs no Patroni" in p for p in single)
    # A sharded source is followed group by group.
    scale = spec("scale", **{"sikka:promoteFrom": "scale-eu", "sikka:promoteForce": True})
    assert scale.promotion is not None


def test_promote_to_names_another_stack() -> None:
    assert spec("launch", **{"sikka:promoteTo": "growth"}).promote_to == "growth"
    (problem,) = problems("launch", **{"sikka:promoteTo": "launch"})
    assert problem.startswith("sikka:promoteTo: names this stack itself")


# --- tokens ----------------------------------------------------------------------------------


def test_tokens_are_filled_from_the_source_outputs() -> None:
    source = {"postgres": {"host": "sikka-launch-postgres-0", "port": 5432.0}}
    value = {"a": [token("postgres", "host")], "b": token("postgres", "port")}
    value["c"] = f"{token('postgres', 'host')}:{token('postgres', 'port')}"
    assert tokens_in(value) == {("postgres", "host"), ("postgres", "port")}
    # A token alone keeps the output's type; a port is an integer, not JSON's 5432.0.
    assert fill_tokens(value, source) == {
        "a": ["sikka-launch-postgres-0"],
        "b": 5432,
        "c": "sikka-launch-postgres-0:5432",
    }
    with pytest.raises(KeyError, match=r"has no redis\.host"):
        fill_tokens(token("redis", "host"), {"redis": {"host": None}})


def test_full_reference() -> None:
    assert full_reference("launch", "acme", "sikka-scaling") == "acme/sikka-scaling/launch"
    assert full_reference("other/launch", "acme", "p") == "acme/other/launch"
    assert full_reference("o/p/launch", "acme", "sikka-scaling") == "o/p/launch"


# --- what the renderers make of it (Docker) --------------------------------------------------


def docker_growth(**values: Any) -> Any:
    return build_topology(spec("growth", **{"sikka:promoteFrom": "launch", **values}))


def patroni_yml(topology: Any, member: str = "postgres-0") -> str:
    node = topology.node(member)
    return next(f.content for f in node.files if f.path.endswith("patroni.yml"))


def test_the_docker_target_is_a_standby_cluster_of_the_source() -> None:
    topology = docker_growth()
    source = {"postgres": {"host": "sikka-launch-postgres-0", "port": 5432.0}}
    document = yaml.safe_load(fill_tokens(patroni_yml(topology), source))
    assert document["bootstrap"]["dcs"]["standby_cluster"] == {
        "host": "sikka-launch-postgres-0",
        "port": 5432,
        "create_replica_methods": ["basebackup"],
    }
    for member in (n for n in topology.tier("postgres") if n.group == "postgres"):
        assert member.extra_networks == (token("docker", "network"),)
    # Besides them only the Redis master joins the source's network; no promoter yet.
    others = [n.name for n in topology.nodes if n.extra_networks and n.group != "postgres"]
    assert others == ["redis-0"]
    assert not topology.has_node(PROMOTER)
    assert "standby_cluster" not in patroni_yml(build_topology(spec("growth")))


def test_the_cutover_adds_the_promoter_and_changes_no_member() -> None:
    following, promoted = docker_growth(), docker_growth(**{"sikka:promoteCutover": True})
    # Every node but the guards stays; the Redis master alone changes (it stops following).
    assert [n.name for n in following.nodes] == [
        n.name for n in promoted.nodes if n.name not in (PROMOTER, "redis-promote")
    ]
    redis_guard = promoted.node("redis-promote").entrypoint or ()
    assert subprocess.run(["sh", "-n", "-c", redis_guard[-1]], check=False).returncode == 0
    changed = [n.name for n in following.nodes if n != promoted.node(n.name)]
    assert changed == ["redis-0"]
    promoter = promoted.node(PROMOTER)
    assert promoter.one_shot and promoter.role == "promoter"
    script = promoter.entrypoint[-1] if promoter.entrypoint else ""
    assert '{"standby_cluster":null}' in script and "/primary" in script
    assert "RESTAPI_PASSWORD" in promoter.secret_env and "$RESTAPI_PASSWORD" in script
    assert subprocess.run(["sh", "-n", "-c", script], check=False).returncode == 0
    # It starts once every member is up (connects-to edges, scaling.docker.start_after).
    members = {e.target for e in promoted.edges_from(PROMOTER)}
    assert members == {"postgres-0", "postgres-1", "postgres-2"}


def test_a_docker_source_keeps_a_replication_login_for_its_target() -> None:
    plain = build_topology(spec("launch"))
    source = build_topology(spec("launch", **{"sikka:promoteTo": "growth"}))
    primary = source.node("postgres-0")
    assert primary.extra_networks == (source.spec.docker_transition_network,)
    assert "replication-password" in primary.secret_env.values()
    assert "replication-password" in required_secrets(source.spec)
    assert "replication-password" not in required_secrets(plain.spec)
    hba = next(f.content for f in primary.files if f.path.endswith("pg_hba.conf"))
    subnet = str(source.spec.docker_transition_subnet)
    assert any(
        line.split()[:4] == ["host", "replication", "replicator", subnet]
        for line in hba.splitlines()
    )
    assert (
        "replication"
        not in next(
            f.content for f in plain.node("postgres-0").files if f.path.endswith("pg_hba.conf")
        ).split("# TYPE")[1]
    )
    assert plain.node("postgres-0").extra_networks == ()


def test_a_patroni_source_admits_its_targets_guard_through_its_routers() -> None:
    """growth with sikka:promoteTo: its members admit the superuser (database postgres)
    from the private network, where the routers the target's cut-over guard comes through
    are; without the key, from the socket and loopback alone."""

    def superuser_lines(values: dict[str, Any]) -> list[list[str]]:
        topology = build_topology(spec("growth", **values))
        member = topology.node("postgres-0")
        text = next(f.content for f in member.files if f.path.endswith("patroni.yml"))
        rules = yaml.safe_load(text)["postgresql"]["pg_hba"]
        return [r.split() for r in rules if r.split()[:3] == ["host", "postgres", "postgres"]]

    plain = superuser_lines({})
    source = superuser_lines({"sikka:promoteTo": "scale"})
    subnet = str(spec("growth").docker_subnet)
    assert ["host", "postgres", "postgres", subnet, "scram-sha-256"] in source
    assert not any(line[3] == subnet for line in plain)
    assert len(source) == len(plain) + 1


# --- what the renderers make of it (Kubernetes Redis) ----------------------------------------


def test_on_kubernetes_the_redis_master_follows_the_source_until_the_cutover() -> None:
    values = {"sikka:platform": "kubernetes", "sikka:promoteFrom": "launch"}
    following = build_topology(spec("growth", **values))
    promoted = build_topology(spec("growth", **values, **{"sikka:promoteCutover": True}))
    follow_line = (
        f'[ "$master" != "$NODE_HOST" ] || set -- "$@" --replicaof '
        f"{token('redis', 'host')} {token('redis', 'port')}"
    )
    assert f"{follow_line}\n" in following.node("redis-0").entrypoint[2]  # type: ignore[index]
    assert "@@source" not in promoted.node("redis-0").entrypoint[2]  # type: ignore[index]
    # One script for the StatefulSet: the replicas carry the line too (it skips them).
    assert follow_line in following.node("redis-1").entrypoint[2]  # type: ignore[index]
    assert following.node("redis-0").extra_networks == ()


def script(topology: Any, node: str) -> str:
    entrypoint = topology.node(node).entrypoint
    assert entrypoint is not None
    return str(entrypoint[2])


def test_on_docker_the_redis_master_follows_the_source_until_the_cutover() -> None:
    following = docker_growth()
    promoted = docker_growth(**{"sikka:promoteCutover": True})
    fresh = build_topology(spec("growth"))
    follow_line = (
        f'[ "$master" != "$NODE_HOST" ] || set -- "$@" --replicaof '
        f"{token('redis', 'host')} {token('redis', 'port')}"
    )
    master = script(following, "redis-0")
    assert f"{follow_line} --replica-announce-ip sikka-growth-redis-0\n" in master
    # The password stays in the environment: masterauth is written from $REDIS_PASSWORD.
    assert following.node("redis-0").secret_env == {"REDIS_PASSWORD": "redis-password"}
    assert 'masterauth "%s"' in master and "@@source.redis.password" not in master
    assert subprocess.run(["sh", "-n", "-c", master], check=False).returncode == 0
    assert following.node("redis-0").extra_networks == (token("docker", "network"),)
    # The master's script alone names the source: the cut-over replaces it and no replica.
    for replica in ("redis-1", "redis-2"):
        assert script(following, replica) == script(promoted, replica) == script(fresh, replica)
        assert following.node(replica).extra_networks == ()
    # At the cut-over the master starts on its own data, as in a fresh phase.
    assert script(promoted, "redis-0") == script(fresh, "redis-0")
    assert promoted.node("redis-0").extra_networks == ()
    assert promoted.node("redis-0").volumes == following.node("redis-0").volumes


def test_a_docker_source_redis_master_joins_its_transition_network() -> None:
    source = build_topology(spec("launch", **{"sikka:promoteTo": "growth"}))
    assert source.node("redis-0").extra_networks == (source.spec.docker_transition_network,)
    assert build_topology(spec("launch")).node("redis-0").extra_networks == ()
    growth = build_topology(spec("growth", **{"sikka:promoteTo": "growth-eu"}))
    assert [n.name for n in growth.tier("redis") if n.extra_networks] == ["redis-0"]


def as_cluster(phase: Any) -> Any:
    return phase.model_copy(update={"redis": phase.redis.model_copy(update={"mode": "cluster"})})


def test_a_docker_redis_cluster_is_neither_followed_nor_joins_a_transition_network() -> None:
    """Its keys are imported by `sikka-scaling transition`: no master replicates a source."""
    target = as_cluster(spec("growth", **{"sikka:promoteFrom": "launch"}))
    source = as_cluster(spec("growth", **{"sikka:promoteTo": "growth-eu"}))
    assert follow_source(target) is None
    assert transition_networks(target, 0) == transition_networks(source, 0) == ()
    # Sentinel mode, for contrast: the master (index 0) alone.
    following = spec("growth", **{"sikka:promoteFrom": "launch"})
    assert follow_source(following) == (token("redis", "host"), token("redis", "port"))
    assert [transition_networks(following, i) for i in range(3)] == [
        (token("docker", "network"),),
        (),
        (),
    ]

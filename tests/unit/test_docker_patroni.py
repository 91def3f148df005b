"""PostgreSQL fails over by itself on Docker: the growth stack's Patroni members, their etcd
cluster, the HAProxy routers and PgBouncers, evaluated under Pulumi's mock engine."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from support.pulumi_stack import Registered, StackRun, run_stack

from components.secrets import CONFIG_KEYS
from scaling import stackconfig
from scaling.render import patroni
from scaling.render.patroni import REST_PORT
from scaling.render.scram import scram_verifier
from scaling.topology import build_topology

CONTAINER = "docker:index/container:Container"
VOLUME = "docker:index/volume:Volume"
ETCD = ["etcd-0", "etcd-1", "etcd-2"]
MEMBERS = ["postgres-0", "postgres-1", "postgres-2"]
ROUTERS = ["haproxy-0", "haproxy-1"]
POOLERS = ["pgbouncer-0", "pgbouncer-1"]


def by_host(run: StackRun) -> dict[str, Registered]:
    return {r.inputs["hostname"]: r for r in run.of_type(CONTAINER)}


def uploads(container: Registered) -> dict[str, str]:
    return {u["file"]: u["content"] for u in container.inputs.get("uploads", [])}


def patroni_yml(container: Registered) -> dict[str, Any]:
    return yaml.safe_load(uploads(container)["/etc/patroni/patroni.yml"])


def aliases(container: Registered) -> list[str]:
    return container.inputs["networksAdvanced"][0]["aliases"]


def waits_for(run: StackRun, host: str) -> set[str]:
    """The containers a container was registered to wait for (Pulumi depends_on)."""
    hosts = {r.urn: r.inputs["hostname"] for r in run.of_type(CONTAINER)}
    return {hosts[urn] for urn in by_host(run)[host].depends_on if urn in hosts}


@pytest.fixture(scope="module")
def growth() -> StackRun:
    return run_stack("growth")


def test_etcd_members_hold_volumes_and_check_their_health(growth: StackRun) -> None:
    containers = by_host(growth)
    volumes = {v.inputs["name"]: v for v in growth.of_type(VOLUME)}
    (pulled_etcd,) = [
        r
        for r in growth.of_type("docker:index/remoteImage:RemoteImage")
        if r.inputs["name"].startswith("quay.io/coreos/etcd:")
    ]
    for index, name in enumerate(ETCD):
        etcd = containers[name]
        assert pulled_etcd.urn in etcd.depends_on  # runs the pulled etcd image
        assert etcd.inputs["volumes"] == [
            {"volumeName": f"sikka-growth-etcd-{index}-data", "containerPath": "/var/lib/etcd"}
        ]
        volume = volumes[f"sikka-growth-etcd-{index}-data"]
        assert volume.protect and volume.retain_on_delete
        # The image has no shell: the check runs etcdctl itself.
        assert etcd.inputs["healthcheck"]["tests"] == [
            "CMD",
            "etcdctl",
            "--endpoints=http://127.0.0.1:2379",
            "endpoint",
            "health",
        ]
        flags = etcd.inputs["entrypoints"]
        assert f"--name={name}" in flags
        assert (
            "--initial-cluster=etcd-0=http://etcd-0:2380,etcd-1=http://etcd-1:2380,"
            "etcd-2=http://etcd-2:2380"
        ) in flags
        assert (etcd.inputs["stopSignal"], etcd.inputs["stopTimeout"]) == ("SIGTERM", 30)
        assert "etcd" in aliases(etcd)


def test_members_run_patroni_with_a_health_check_on_its_api(growth: StackRun) -> None:
    containers = by_host(growth)
    (image,) = [
        r
        for r in growth.of_type("docker:index/image:Image")
        if r.inputs["imageName"].endswith("/postgres-patroni:0.1.0")
    ]
    for name in MEMBERS:
        member = containers[name]
        assert member.inputs["user"] == "postgres"
        assert member.inputs["entrypoints"][-1].endswith("exec patroni /etc/patroni/patroni.yml")
        test = member.inputs["healthcheck"]["tests"]
        assert test[0] == "CMD-SHELL"
        assert f"curl -fsS -o /dev/null http://127.0.0.1:{REST_PORT}/health" in test[1]
        # Patroni stops PostgreSQL itself (handing the lead over first): SIGTERM, with time.
        assert (member.inputs["stopSignal"], member.inputs["stopTimeout"]) == ("SIGTERM", 120)
        assert member.inputs["destroyGraceSeconds"] == 120
        assert member.delete_before_replace
        assert member.inputs["tmpfs"] == {"/run/sikka": "mode=1777"}
        assert image.urn in member.depends_on  # runs the image the stack built


@pytest.mark.parametrize("name", MEMBERS)
def test_each_member_names_itself_and_every_etcd_member(growth: StackRun, name: str) -> None:
    config = patroni_yml(by_host(growth)[name])
    assert config["name"] == name
    assert config["scope"] == "sikka-growth"
    assert config["restapi"]["connect_address"] == f"{name}:{REST_PORT}"
    assert config["postgresql"]["connect_address"] == f"{name}:5432"
    assert config["etcd3"]["hosts"] == [f"{e}:2379" for e in ETCD]
    # The pre-Patroni data folder: the volume a deployed stack already holds.
    assert config["postgresql"]["data_dir"] == "/var/lib/postgresql/data"
    assert by_host(growth)[name].inputs["volumes"] == [
        {"volumeName": f"sikka-growth-{name}-data", "containerPath": "/var/lib/postgresql/data"}
    ]


def walk_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for item in value.values() for k in walk_keys(item)}
    if isinstance(value, list):
        return {k for item in value for k in walk_keys(item)}
    return set()


def test_patroni_yml_is_a_patroni_configuration(growth: StackRun) -> None:
    """The keys Patroni reads, with values of the types it expects; no password anywhere."""
    config = patroni_yml(by_host(growth)["postgres-1"])
    assert {"scope", "name", "restapi", "etcd3", "bootstrap", "postgresql", "tags"} <= set(config)
    assert set(config["restapi"]) >= {"listen", "connect_address"}
    dcs = config["bootstrap"]["dcs"]
    assert all(isinstance(dcs[key], int) for key in ("ttl", "loop_wait", "retry_timeout"))
    # Patroni's rule: a DCS hiccup shorter than retry_timeout never demotes the leader.
    assert dcs["loop_wait"] + 2 * dcs["retry_timeout"] <= dcs["ttl"]
    assert isinstance(dcs["synchronous_mode"], bool)
    assert dcs["postgresql"]["use_pg_rewind"] is True
    pg = config["postgresql"]
    assert set(pg["authentication"]) == {"superuser", "replication", "rewind"}
    assert all(set(user) == {"username"} for user in pg["authentication"].values())
    assert set(pg["callbacks"]) == {"on_start", "on_role_change"}
    assert all(isinstance(rule, str) for rule in pg["pg_hba"])
    assert all(isinstance(value, str) for value in pg["parameters"].values())
    assert "password" not in walk_keys(config)


@pytest.mark.parametrize(
    ("mode", "synchronous", "strict"),
    [("strict", True, True), ("on", True, False), ("off", False, False)],
)
def test_synchronous_mode_reaches_every_member(mode: str, synchronous: bool, strict: bool) -> None:
    run = run_stack("growth", {"sikka:postgres": {"synchronousMode": mode}})
    for name in MEMBERS:
        dcs = patroni_yml(by_host(run)[name])["bootstrap"]["dcs"]
        assert (dcs["synchronous_mode"], dcs["synchronous_mode_strict"]) == (synchronous, strict)
    assert run.exports["postgres"]["failover"]["synchronous_mode"] == mode


def test_routers_follow_the_leader_for_writes_and_replicas_for_reads(growth: StackRun) -> None:
    containers = by_host(growth)
    for name in ROUTERS:
        router = containers[name]
        cfg = uploads(router)["/usr/local/etc/haproxy/haproxy.cfg"]
        sections = {block.split("\n", 1)[0]: block for block in cfg.split("\n\n") if block.strip()}
        primary, replicas = sections["listen primary"], sections["listen replicas"]
        assert "bind 0.0.0.0:5432" in primary and "uri /primary" in primary
        assert "bind 0.0.0.0:5433" in replicas and "uri /replica?lag=" in replicas
        for section in (primary, replicas):
            for member in MEMBERS:
                assert f"server {member} {member}:5432 check port {REST_PORT}" in section
            # A recreated member may come back at another address: follow its name.
            assert "resolvers private" in section
        assert "nameserver dns 127.0.0.11:53" in cfg
        assert router.inputs["command"][0] == "haproxy"
        assert router.inputs["healthcheck"]["tests"][0] == "CMD-SHELL"
        assert router.inputs["stopSignal"] == "SIGUSR1"
        assert not router.inputs.get("volumes")


def test_service_names_resolve_to_routers_and_poolers(growth: StackRun) -> None:
    containers = by_host(growth)
    answering: dict[str, set[str]] = {}
    for host, container in containers.items():
        for alias in aliases(container):
            answering.setdefault(alias, set()).add(host)
    assert answering["postgres"] == set(ROUTERS)
    assert answering["postgres-replicas"] == set(ROUTERS)
    assert answering["pgbouncer"] == set(POOLERS)
    assert answering["etcd"] == set(ETCD)
    for member in MEMBERS:  # a member is reached by its own name alone
        assert answering[member] == {member}
        assert aliases(containers[member]) == [member]


def test_start_order(growth: StackRun) -> None:
    """etcd (together) → postgres-0 → postgres-1 → postgres-2 → routers → poolers, each step
    once the previous is healthy (pulumi-docker's wait)."""
    for name in ETCD:
        assert waits_for(growth, name) == set(), name
    assert waits_for(growth, "postgres-0") == set(ETCD)
    assert waits_for(growth, "postgres-1") == {*ETCD, "postgres-0"}
    assert waits_for(growth, "postgres-2") == {*ETCD, "postgres-0", "postgres-1"}
    for router in ROUTERS:
        assert waits_for(growth, router) == set(MEMBERS)
    for pooler in POOLERS:
        assert waits_for(growth, pooler) == set(ROUTERS)
    containers = by_host(growth)
    for name in ETCD + MEMBERS + ROUTERS + POOLERS:
        assert containers[name].inputs["wait"] is True, name


def test_no_secret_value_reaches_an_uploaded_file() -> None:
    supplied = {f"sikka:{key}": f"s3cret-{key}-value" for key in CONFIG_KEYS.values()}
    run = run_stack("growth", secret_values=supplied)
    assert not run.of_type("random:index/randomPassword:RandomPassword")
    envs = [e for c in run.of_type(CONTAINER) for e in c.inputs["envs"]]
    # Each secret is used; these two by their SCRAM verifiers (PostgreSQL, PgBouncer).
    verified = {"postgresPassword": "DATABASE", "pgbouncerAdminPassword": "PGBOUNCER_ADMIN"}
    for key, value in supplied.items():
        name = key.removeprefix("sikka:")
        if name in verified:
            (verifier,) = {
                e.split("=", 1)[1]
                for e in envs
                if e.startswith(f"{verified[name]}_PASSWORD_SCRAM=")
            }
            salt = base64.b64decode(verifier.split("$")[1].split(":")[1])
            assert verifier == scram_verifier(value, salt), name
        else:
            assert any(e.endswith("=" + value) for e in envs), value
    # The monitoring password reaches the exporters as it is, and the members and poolers as
    # its verifier.
    (monitor,) = {e.split("=", 1)[1] for e in envs if e.startswith("MONITORING_PASSWORD_SCRAM=")}
    salt = base64.b64decode(monitor.split("$")[1].split(":")[1])
    assert monitor == scram_verifier(supplied["sikka:monitoringPassword"], salt)
    for container in run.of_type(CONTAINER):
        for path, content in uploads(container).items():
            for value in supplied.values():
                assert value not in content, (container.name, path)
        for part in (container.inputs.get("entrypoints") or []) + (
            container.inputs.get("command") or []
        ):
            assert not any(value in part for value in supplied.values()), container.name
        if container.inputs["envs"] and any(
            any(e.endswith("=" + v) for v in supplied.values()) for e in container.inputs["envs"]
        ):
            assert "envs" in container.secret_paths(), container.name


def test_failover_is_exported(growth: StackRun) -> None:
    failover = growth.exports["postgres"]["failover"]
    assert failover["manager"] == "patroni"
    assert failover["dcs"] == {"kind": "etcd3", "endpoints": [f"{e}:2379" for e in ETCD]}
    assert failover["members"] == [{"name": m, "api": f"http://{m}:{REST_PORT}"} for m in MEMBERS]
    assert (failover["leader_path"], failover["cluster_path"]) == ("/leader", "/cluster")
    assert failover["synchronous_mode"] == "on"
    assert "postgres" not in growth.secret_exports


@pytest.mark.parametrize(
    ("stack", "overrides", "manager"),
    [("launch", {}, "none"), ("growth", {"sikka:platform": "kubernetes"}, "stackgres")],
)
def test_failover_manager_per_platform(stack: str, overrides: dict, manager: str) -> None:
    failover = run_stack(stack, overrides).exports["postgres"]["failover"]
    assert failover["manager"] == manager
    assert "members" not in failover or failover["members"] == []


# The growth stack's PostgreSQL volumes as the stack registered them before Patroni (a
# primary and two streaming replicas): URN and every input (any input change replaces a
# Docker volume).
PRE_PATRONI_VOLUMES = {
    f"urn:pulumi:growth::sikka-scaling::sikka:postgres:Postgres$docker:index/volume:Volume::"
    f"sikka-growth-postgres-postgres-{i}-data": {
        "name": f"sikka-growth-postgres-{i}-data",
        "labels": [{"label": "sikka.io/node", "value": f"postgres-{i}"}],
    }
    for i in range(3)
}
PRE_PATRONI_SHAPE = {"platform": "docker", "postgresMode": "replicated", "redisMode": "sentinel"}


def test_a_deployed_pre_patroni_stack_keeps_its_postgres_volumes() -> None:
    run = run_stack("growth", previous_outputs={"deployedShape": PRE_PATRONI_SHAPE})
    volumes = {v.urn: v for v in run.of_type(VOLUME)}
    for urn, inputs in PRE_PATRONI_VOLUMES.items():
        assert urn in volumes, urn
        assert volumes[urn].inputs == inputs
        assert volumes[urn].protect and volumes[urn].retain_on_delete
    # postgres-0 (the former primary) starts first, so it takes the lead with its data.
    assert waits_for(run, "postgres-0") == set(ETCD)
    new = {v.inputs["name"] for urn, v in volumes.items() if "postgres:Postgres" in urn}
    new -= {i["name"] for i in PRE_PATRONI_VOLUMES.values()}
    assert new == {f"sikka-growth-etcd-{i}-data" for i in range(3)}


@pytest.mark.parametrize("synchronous", ["strict", "off"])
def test_patroni_yml_is_the_same_text_with_or_without_libyaml(
    monkeypatch: pytest.MonkeyPatch, synchronous: str
) -> None:
    """The program renders patroni.yml with libyaml's emitter when PyYAML has it; PyYAML's
    pure-Python emitter, its fallback, must write the very same file (a different text would
    replace every Patroni member)."""
    spec = stackconfig.parse(
        {"sikka:phase": "growth", "sikka:postgres": {"synchronousMode": synchronous}},
        stack="growth",
    )

    def members_files() -> dict[str, str]:
        return {
            f"{node.name}:{f.path}": f.content
            for node in build_topology(spec).nodes
            for f in node.files
            if f.path.endswith("patroni.yml")
        }

    rendered = members_files()
    monkeypatch.setattr(patroni, "YAML_DUMPER", yaml.SafeDumper)
    assert len(rendered) == len(MEMBERS)
    assert members_files() == rendered

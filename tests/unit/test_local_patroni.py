"""The local runner's Patroni pieces that decide without running anything: member and router
layouts, the PID-namespace command line, what Patroni's /cluster says, the summary's URLs
and `down`'s order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from scaling.local import patroni_api, pidns, runner
from scaling.local.patroni import PatroniMember, member_host, member_layout
from scaling.local.pgsummary import postgres_summary, url
from scaling.local.postgres import PostgresEndpoints, host_list, pooler_host
from scaling.local.routers import router_host, router_layout
from scaling.local.state import ProcessEntry
from scaling.local.topology import local_topology, nodes
from scaling.render.endpoints import Endpoint
from scaling.render.haproxy import render_haproxy_cfg
from scaling.render.patroni import render_patroni_yml

ROOT = Path(__file__).resolve().parents[2]
ETCD = (Endpoint("127.0.0.1", 20001), Endpoint("127.0.0.1", 20003))


def growth() -> Any:
    return runner.load_spec(ROOT / "Pulumi.growth.yaml")


def member(ordinal: int, folder: Path) -> dict[str, Any]:
    host = member_host(ordinal)
    layout = member_layout(
        "growth",
        f"postgres-{ordinal}",
        Endpoint(host, 16000),
        Endpoint(host, 16001),
        folder / f"postgres-{ordinal}",
        ETCD,
        "/usr/lib/postgresql/15/bin",
    )
    document: dict[str, Any] = yaml.safe_load(render_patroni_yml(growth(), layout))
    return document


def test_members_are_reached_on_their_own_loopback_address(tmp_path: Path) -> None:
    """Patroni refuses 127.0.0.1 as a connect address; each member has its own, one port
    shared by all."""
    documents = [member(i, tmp_path) for i in range(3)]
    addresses = [d["postgresql"]["connect_address"] for d in documents]
    assert addresses == ["127.0.1.1:16000", "127.0.1.2:16000", "127.0.1.3:16000"]
    assert [d["restapi"]["connect_address"] for d in documents] == [
        "127.0.1.1:16001",
        "127.0.1.2:16001",
        "127.0.1.3:16001",
    ]
    first = documents[0]
    assert first["postgresql"]["data_dir"] == str(tmp_path / "postgres-0" / "data")
    assert first["postgresql"]["bin_dir"] == "/usr/lib/postgresql/15/bin"
    assert first["etcd3"]["hosts"] == ["127.0.0.1:20001", "127.0.0.1:20003"]
    script = f"sh {tmp_path / 'postgres-0' / 'roles.sh'}"
    assert first["bootstrap"]["post_bootstrap"] == script
    assert first["postgresql"]["callbacks"] == {"on_role_change": script, "on_start": script}
    # Members, routers and poolers connect from loopback: pg_hba admits them from there.
    assert any("127.0.0.0/8" in rule for rule in first["postgresql"]["pg_hba"])


def test_a_member_in_a_pid_namespace_runs_as_its_account() -> None:
    argv = pidns.wrap(["/venv/bin/patroni", "/x/patroni.yml"], "postgres")
    assert argv[: argv.index("--") + 1] == [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
    ]
    assert argv[argv.index("--") + 1 :] == [
        "setpriv",
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "/venv/bin/patroni",
        "/x/patroni.yml",
    ]
    assert pidns.wrap(["patroni", "c.yml"], None) == [*pidns.LAUNCHER, "patroni", "c.yml"]


def test_routers_check_every_member_on_its_rest_api() -> None:
    members = [
        PatroniMember(
            f"postgres-{i}",
            Endpoint(member_host(i), 16000),
            Endpoint(member_host(i), 16001),
            "/x.yml",
        )
        for i in range(3)
    ]
    layout = router_layout(router_host(1), (17000, 17001, 17002), members)
    assert (str(layout.read_write), str(layout.read_only), str(layout.stats)) == (
        "127.0.2.2:17000",
        "127.0.2.2:17001",
        "127.0.2.2:17002",
    )
    cfg = render_haproxy_cfg(growth(), layout)
    for i in range(3):
        assert f"server postgres-{i} 127.0.1.{i + 1}:16000 check port 16001" in cfg


def test_one_address_for_hosts_sharing_a_port() -> None:
    routers = [Endpoint(router_host(0), 17000), Endpoint(router_host(1), 17000)]
    assert str(host_list(routers)) == "127.0.2.1,127.0.2.2:17000"
    with pytest.raises(ValueError, match="share a port"):
        host_list([Endpoint("127.0.2.1", 1), Endpoint("127.0.2.2", 2)])
    assert pooler_host(1) == "127.0.3.2"


def test_urls_over_several_hosts_are_libpq_multi_host_urls() -> None:
    poolers = [Endpoint(pooler_host(0), 6000), Endpoint(pooler_host(1), 6000)]
    assert url("app", poolers, "db") == "postgresql://app@127.0.3.1:6000,127.0.3.2:6000/db"
    with pytest.raises(ValueError):
        url("app", [], "db")


CLUSTER = {
    "members": [
        {"name": "postgres-0", "role": "replica", "state": "streaming", "timeline": 2, "lag": 0},
        {"name": "postgres-1", "role": "leader", "state": "running", "timeline": 2},
        {
            "name": "postgres-2",
            "role": "sync_standby",
            "state": "streaming",
            "timeline": 2,
            "lag": "unknown",
        },
    ]
}


def test_what_patroni_says_about_its_cluster() -> None:
    assert patroni_api.leader(CLUSTER) == "postgres-1"
    assert patroni_api.leader(None) is None
    assert patroni_api.leader({"members": [CLUSTER["members"][0]]}) is None
    rows = patroni_api.members(CLUSTER)
    assert [(r["name"], r["role"], r["timeline"], r["lag"]) for r in rows] == [
        ("postgres-0", "replica", 2, 0),
        ("postgres-1", "leader", 2, None),
        ("postgres-2", "sync_standby", 2, None),
    ]
    names = ["postgres-0", "postgres-1", "postgres-2"]
    assert patroni_api.healthy(CLUSTER, names)
    starting = {"members": [*CLUSTER["members"][1:], {"name": "postgres-0", "state": "starting"}]}
    assert not patroni_api.healthy(starting, names)
    assert not patroni_api.healthy({"members": CLUSTER["members"][1:]}, names)
    assert not patroni_api.healthy(None, names)


def test_summary_names_the_leader_and_the_replicas_when_up_finished() -> None:
    spec = growth()
    members = [
        PatroniMember(
            f"postgres-{i}", Endpoint(member_host(i), 16000), Endpoint(member_host(i), 16001), ""
        )
        for i in range(3)
    ]
    found = PostgresEndpoints(
        primary=[Endpoint(router_host(0), 17000), Endpoint(router_host(1), 17000)],
        read_only=[Endpoint(router_host(0), 17001), Endpoint(router_host(1), 17001)],
        members=members,
        poolers=[Endpoint(pooler_host(0), 6000), Endpoint(pooler_host(1), 6000)],
    )
    summary = postgres_summary(spec, found, CLUSTER)
    user, db = spec.postgres.user, spec.postgres.database
    assert summary["mode"] == "replicated" and summary["leader"] == "postgres-1"
    assert summary["primary"] == f"postgresql://{user}@127.0.2.1:17000,127.0.2.2:17000/{db}"
    assert summary["replicas"] == [
        f"postgresql://{user}@127.0.1.1:16000/{db}",
        f"postgresql://{user}@127.0.1.3:16000/{db}",
    ]
    assert summary["pooler"] == f"postgresql://{user}@127.0.3.1:6000,127.0.3.2:6000/{db}"
    assert summary["pooler_read_only"].endswith(f"/{db}_ro")
    assert summary["members"][1]["api"] == "http://127.0.1.2:16001"


def _entry(name: str, role: str, tier: str = "postgres") -> ProcessEntry:
    return ProcessEntry(name=name, role=role, tier=tier, argv=[], log="")


def test_down_stops_routers_then_replicas_then_the_current_leader_then_etcd() -> None:
    topology = local_topology(growth())
    entries = [_entry(n.name, n.role, n.tier) for n in nodes(topology, "postgres")]
    entries.append(_entry("nginx", "proxy", "nginx"))

    def order(leader: str | None) -> list[str]:
        ranked = sorted(entries, key=lambda e: runner.stop_key(e, leader))
        return [e.name for e in ranked]

    # postgres-2 leads now: it stops after the other members, whatever the topology says.
    assert order("postgres-2") == [
        "nginx",
        "haproxy-0",
        "haproxy-1",
        "pgbouncer-0",
        "pgbouncer-1",
        "postgres-0",
        "postgres-1",
        "postgres-2",
        "etcd-0",
        "etcd-1",
        "etcd-2",
    ]
    # No member answers: the recorded roles decide (the bootstrap member last).
    assert order(None)[5:8] == ["postgres-1", "postgres-2", "postgres-0"]


def test_status_marks_the_leader_and_shows_each_members_live_role() -> None:
    from scaling.local.cli import _status_line

    member = {"role": "leader", "state": "running", "timeline": 3, "lag": None}
    row = {
        "name": "postgres-2",
        "role": "replica",
        "pid": 42,
        "host": "127.0.1.3",
        "port": 16000,
        "alive": True,
    }
    line = _status_line({**row, "patroni": member, "leader": True})
    assert line.split()[:2] == ["postgres-2", "leader"]
    assert "127.0.1.3:16000" in line and "timeline 3" in line and line.endswith("*leader")
    replica = {**member, "role": "sync_standby", "state": "streaming", "lag": 0}
    line = _status_line({**row, "name": "postgres-0", "patroni": replica, "leader": False})
    assert "sync_standby" in line and "lag 0" in line and "*leader" not in line
    assert _status_line({**row, "name": "etcd-0", "role": "dcs"}).split()[1] == "dcs"

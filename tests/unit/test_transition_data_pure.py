"""The decisions of a transition's data tier that run nothing: the standby cluster rendering,
the secrets a target inherits, where a Follow connects, LSN and pg_controldata parsing."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from scaling.local import patroni_api, runner
from scaling.local.credentials import inherited_secrets, new_secrets
from scaling.local.follow import Follow, read_write_door
from scaling.local.patroni import member_host, member_layout
from scaling.local.postgres import (
    passfile_line,
    primary_conninfo,
    render_standby_auto_conf,
    standby_parameters,
)
from scaling.render.endpoints import Endpoint
from scaling.render.env import SECRET_VARIABLES, VERIFIER_OF
from scaling.render.patroni import StandbySource, render_patroni_yml
from scaling.render.scram import scram_verifier
from scaling.transition.local_data import (
    lsn_int,
    parse_controldata,
    replicaof_argv,
    replication_hba_line,
)

ROOT = Path(__file__).resolve().parents[2]


def growth_member(tmp_path: Path, standby: StandbySource | None) -> dict[str, Any]:
    host = member_host(0)
    layout = member_layout(
        "growth",
        "postgres-0",
        Endpoint(host, 16000),
        Endpoint(host, 16001),
        tmp_path / "postgres-0",
        (Endpoint("127.0.0.1", 20001),),
        None,
    )
    spec = runner.load_spec(ROOT / "Pulumi.growth.yaml")
    document: dict[str, Any] = yaml.safe_load(render_patroni_yml(spec, layout, standby))
    return document


def test_a_target_bootstraps_as_a_standby_cluster_of_the_source(tmp_path: Path) -> None:
    document = growth_member(tmp_path, StandbySource("127.0.2.1", 25432))
    assert document["bootstrap"]["dcs"]["standby_cluster"] == {
        "host": "127.0.2.1",
        "port": 25432,
        "create_replica_methods": ["basebackup"],
    }
    # The rest of the cluster's configuration is the fresh cluster's.
    fresh = growth_member(tmp_path, None)
    assert "standby_cluster" not in fresh["bootstrap"]["dcs"]
    dcs = dict(document["bootstrap"]["dcs"])
    del dcs["standby_cluster"]
    assert dcs == fresh["bootstrap"]["dcs"]


def test_a_target_inherits_every_secret_of_its_source() -> None:
    source = new_secrets()
    del source["monitoring-password"], source["monitoring-password-scram"]  # an older run
    inherited = inherited_secrets(source)
    for name, value in source.items():
        assert inherited[name] == value, name
    expected = {n for n in SECRET_VARIABLES if n not in VERIFIER_OF} | set(VERIFIER_OF)
    assert expected <= set(inherited)
    # What the source lacked is generated, its verifier made from the new password.
    assert made_from(inherited["monitoring-password-scram"], inherited["monitoring-password"])
    assert inherited["monitoring-password"] not in source.values()


def made_from(verifier: str, password: str) -> bool:
    """``SCRAM-SHA-256$<iterations>:<salt>$<stored>:<server>`` made from ``password``."""
    iterations, salt = verifier.split("$")[1].split(":")
    return scram_verifier(password, base64.b64decode(salt), int(iterations)) == verifier


def test_a_follow_replicates_through_the_first_host_of_the_read_write_door() -> None:
    single = {"primary": "postgresql://sikka@127.0.0.1:23894/sikka"}
    routers = {"primary": "postgresql://sikka@127.0.2.1:24001,127.0.2.2:24001/sikka"}
    assert read_write_door(single) == Endpoint("127.0.0.1", 23894)
    assert read_write_door(routers) == Endpoint("127.0.2.1", 24001)


def test_lsns_compare_as_byte_positions() -> None:
    assert lsn_int("0/3025E30") == 0x3025E30
    assert lsn_int("1/0") == 1 << 32
    assert lsn_int("1/0") > lsn_int("0/FFFFFFFF")


def test_pg_controldata_fields() -> None:
    text = (
        "pg_control version number:            1300\n"
        "Database cluster state:               shut down\n"
        "Latest checkpoint location:           0/3025E30\n"
    )
    fields = parse_controldata(text)
    assert fields["Database cluster state"] == "shut down"
    assert fields["Latest checkpoint location"] == "0/3025E30"


def test_the_replication_line_admits_the_replication_role_from_loopback_only() -> None:
    words = replication_hba_line().split()
    assert words == ["host", "replication", "replicator", "127.0.0.0/8", "scram-sha-256"]


@pytest.mark.parametrize(
    ("state", "healthy"), [("streaming", True), ("running", True), ("stopped", False)]
)
def test_a_standby_leader_streaming_from_its_source_is_a_healthy_head(
    state: str, healthy: bool
) -> None:
    cluster = {
        "members": [
            {"name": "postgres-0", "role": "standby_leader", "state": state},
            {"name": "postgres-1", "role": "replica", "state": "streaming"},
        ]
    }
    assert patroni_api.healthy(cluster, ["postgres-0", "postgres-1"]) is healthy


def test_a_promoted_master_restarts_as_a_master_and_the_old_one_as_its_replica() -> None:
    follower = ["redis-server", "/x/redis.conf", "--replicaof", "127.0.0.1", "7000"]
    assert replicaof_argv(follower, None) == ["redis-server", "/x/redis.conf"]
    old = ["redis-server", "/y/redis.conf", "--replica-announce-ip", "127.0.0.1"]
    assert replicaof_argv(old, Endpoint("127.0.0.1", 7100)) == [
        *old,
        "--replicaof",
        "127.0.0.1",
        "7100",
    ]


def test_a_single_postgresql_follows_by_base_backup_and_cleans_up_when_it_cannot(
    tmp_path: Path,
) -> None:
    """Launch runs a single PostgreSQL: following, it starts from pg_basebackup of the
    source's door; a door that refuses fails `up` at that server, and nothing is left."""
    follow = Follow(
        stack="growth",
        state_dir=tmp_path / "growth",
        postgres=Endpoint("127.0.2.1", 25432),
        redis_master=Endpoint("127.0.0.1", 26379),
        redis_mode="sentinel",
        secrets=new_secrets(),
    )
    spec = runner.load_spec(ROOT / "Pulumi.launch.yaml")
    with pytest.raises(runner.LocalUpError, match="postgres-0: pg_basebackup exited 1"):
        runner.up(spec, stack="launch", state_dir=tmp_path / "launch", follow=follow)
    assert not (tmp_path / "launch").exists()


def test_a_single_standby_reads_its_password_from_a_file_never_from_its_conninfo() -> None:
    door = Endpoint("127.0.2.1", 25432)
    assert passfile_line(door, "replicator", "a:b\\c") == (
        "127.0.2.1:25432:replication:replicator:a\\:b\\\\c"
    )
    conninfo = primary_conninfo(door, "replicator", Path("/s/postgres-0/replication.pgpass"), "pg0")
    assert conninfo == (
        "host=127.0.2.1 port=25432 user=replicator passfile=/s/postgres-0/replication.pgpass "
        "application_name=pg0 connect_timeout=3"
    )
    assert "password" not in conninfo
    auto = render_standby_auto_conf("host=h user=o'k", {"max_connections": "100"})
    assert auto.splitlines()[1:] == [
        "primary_conninfo = 'host=h user=o''k'",
        "max_connections = 100",
    ]


def test_a_single_standby_raises_only_what_its_primary_has_higher() -> None:
    control = parse_controldata(
        "max_connections setting:              100\n"
        "max_worker_processes setting:         8\n"
        "max_wal_senders setting:              10\n"
        "max_prepared_xacts setting:           0\n"
        "max_locks_per_xact setting:           128\n"
    )
    own = {"max_connections": "20", "max_wal_senders": "10"}
    assert standby_parameters(own, control) == {
        "max_connections": "100",
        "max_locks_per_transaction": "128",
    }
    assert standby_parameters({"max_connections": "200", "max_wal_senders": "12"}, control) == {
        "max_locks_per_transaction": "128"
    }
    assert standby_parameters(own, {}) == {}

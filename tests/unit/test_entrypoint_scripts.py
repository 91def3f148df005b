"""The shell that Docker entrypoints run to turn secrets into files and SQL, executed by
/bin/sh: it must produce byte for byte what the Python renderers (used by the local runner,
and proven there by the real servers) produce, whatever the password holds."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from scaling.kubernetes.guards import guard_job, standby_guarded
from scaling.render.patroni import cluster_configuration
from scaling.render.pgbouncer import render_userlist_line, userlist_sh
from scaling.render.postgres_start import (
    SQL_LITERAL_SH,
    database_sql,
    database_sql_sh,
    rewind_role_sql,
    startup_sql,
    startup_sql_sh,
)
from scaling.render.redis import ESCAPE_PASSWORD_SH, render_sentinel_auth, sentinel_auth_sh
from scaling.render.scram import scram_verifier
from scaling.stackconfig import parse
from scaling.topology import build_topology

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")

PASSWORDS = ["plain", 'q"uo\\te', "sp ace$%&'!`x`", '""', "a'); DROP ROLE x; --"]


def sh(script: str, **env: str) -> str:
    result = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, timeout=10, env=env, check=True
    )
    return result.stdout


@pytest.mark.parametrize("password", PASSWORDS)
def test_pgbouncer_userlist(password: str) -> None:
    verifier = scram_verifier(password, password.encode()[:16] or b"salt")
    assert sh(
        userlist_sh("sikka", "DATABASE_PASSWORD_SCRAM"), DATABASE_PASSWORD_SCRAM=verifier
    ) == render_userlist_line("sikka", verifier)
    assert sh(
        userlist_sh("pgbouncer_admin", "PGBOUNCER_ADMIN_PASSWORD_SCRAM"),
        PGBOUNCER_ADMIN_PASSWORD_SCRAM=verifier,
    ) == render_userlist_line("pgbouncer_admin", verifier)


@pytest.mark.parametrize("name", ["pgbouncer-0", "pgbouncer-1"])
def test_pgbouncer_start_writes_both_users_from_their_own_secrets(name: str) -> None:
    """The pooler's entrypoint, cut before it execs pgbouncer: one auth-file line per user,
    each its own SCRAM verifier (the console user's is not the application role's, and the
    exporters' monitoring user has its own); the pooler's container is given no password at
    all."""
    spec = parse({"sikka:phase": "growth"}, stack="growth")
    pooler = build_topology(spec).node(name)
    assert set(pooler.secret_env.values()) == {
        "postgres-password-scram",
        "pgbouncer-admin-password-scram",
        "monitoring-password-scram",
    }
    script = pooler.entrypoint[2]  # type: ignore[index]
    # Cut where the auth file is written, before the PgBouncers start.
    script = script.split("/run/pgbouncer/userlist.txt")[0] + "/dev/stdout\n"
    app, admin = scram_verifier('a"pp', b"salt-one"), scram_verifier("adm'in", b"salt-two")
    monitor = scram_verifier("mo$n", b"salt-three")
    printed = sh(
        script,
        DATABASE_PASSWORD_SCRAM=app,
        PGBOUNCER_ADMIN_PASSWORD_SCRAM=admin,
        MONITORING_PASSWORD_SCRAM=monitor,
    )
    assert printed == (
        render_userlist_line("sikka", app)
        + render_userlist_line("pgbouncer_admin", admin)
        + render_userlist_line("sikka_monitor", monitor)
    )


@pytest.mark.parametrize("password", PASSWORDS)
def test_sentinel_auth(password: str) -> None:
    spec = parse({"sikka:phase": "growth"}, stack="growth")
    script = f"{ESCAPE_PASSWORD_SH}\n{sentinel_auth_sh(spec)}"
    assert sh(script, REDIS_PASSWORD=password) == render_sentinel_auth(spec, password)


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("replication", [True, False])
def test_primary_startup_sql(password: str, replication: bool) -> None:
    slots = ["replica_1", "replica_2"]
    script = (
        f"{SQL_LITERAL_SH}\n{startup_sql_sh('sikka', replication=replication, keep_slots=slots)}"
    )
    printed = sh(
        script,
        POSTGRES_PASSWORD=password + "s",
        DATABASE_PASSWORD_SCRAM=password,
        REPLICATION_PASSWORD=password + "r",
    )
    assert printed == startup_sql(
        "sikka",
        superuser_password=password + "s",
        password=password,
        replication_password=password + "r" if replication else None,
        keep_slots=slots,
    )


def test_primary_database_sql() -> None:
    script = f"{SQL_LITERAL_SH}\n{database_sql_sh('sikka', 'trips_db')}"
    assert sh(script) == database_sql("sikka", "trips_db")


def test_init_script_and_start_script_apply_the_same_sql() -> None:
    """What the image runs once on an empty volume (through psql) is what primary-start.sh
    runs at every later start (in single-user mode)."""
    spec = parse({"sikka:phase": "launch"}, stack="launch")
    primary = build_topology(spec).node("postgres-0")
    files = {f.render_name: f.content for f in primary.files}
    env = {
        "POSTGRES_PASSWORD": "su'per",
        "DATABASE_PASSWORD_SCRAM": "a$pp",
        "REPLICATION_PASSWORD": "re`pl",
        "MONITORING_PASSWORD_SCRAM": "mo'n$",
    }
    prints = []
    for name in ("10-roles.sh", "primary-start.sh"):
        # Keep the SQL functions, print what they produce instead of running servers.
        functions = files[name].split("\nstartup_sql |")[0].split("\nif [ -s")[0]
        prints.append(sh(f"{functions}\nstartup_sql\ndatabase_sql", **env))
    assert prints[0] == prints[1]
    assert prints[0] == startup_sql(
        "sikka",
        superuser_password="su'per",
        password="a$pp",
        replication_password=None,  # launch has no replicas
        keep_slots=[],
        monitoring_password="mo'n$",
    ) + database_sql("sikka", "sikka")


FAKE_PSQL = """#!/bin/sh
# Answers the role script's questions as a running leader would; logs what it is sent.
case "$*" in
  *pg_is_in_recovery*) echo t; exit 0 ;;
  *pg_database*) exit 0 ;;
esac
{ echo "-- psql $* PGPASSWORD=$PGPASSWORD PGOPTIONS=$PGOPTIONS"; cat; } >> "$LOG"
"""


FAKE_CURL = """#!/bin/sh
# Logs its arguments and the configuration it reads on stdin (-K -).
{ echo "-- curl $*"; cat; } >> "$CURL_LOG"
"""


def run_roles_script(tmp_path, *args: str) -> str:  # type: ignore[no-untyped-def]
    spec = parse({"sikka:phase": "growth"}, stack="growth")
    member = build_topology(spec).node("postgres-1")
    script = next(f for f in member.files if f.render_name == "patroni-roles.sh")
    (tmp_path / "roles.sh").write_text(script.content)
    (tmp_path / "psql").write_text(FAKE_PSQL)
    (tmp_path / "psql").chmod(0o755)
    (tmp_path / "curl").write_text(FAKE_CURL)
    (tmp_path / "curl").chmod(0o755)
    (tmp_path / "curl.log").write_text("")
    log = tmp_path / "psql.log"
    log.write_text("")
    # What Patroni leaves its scripts: none of the PATRONI_* variables it has read.
    env = {
        "PATH": f"{tmp_path}:/usr/bin:/bin",
        "LOG": str(log),
        "POSTGRES_PASSWORD": "su'per",
        "DATABASE_PASSWORD_SCRAM": "a$pp",
        "REPLICATION_PASSWORD": "re`pl",
        "REWIND_PASSWORD": "rew'ind",
        "MONITORING_PASSWORD_SCRAM": "mo'n$",
        "RESTAPI_PASSWORD": 'a"p\\i',
        "CURL_LOG": str(tmp_path / "curl.log"),
    }
    subprocess.run(["sh", str(tmp_path / "roles.sh"), *args], env=env, check=True, timeout=10)
    return log.read_text()


@pytest.mark.parametrize(
    "args",
    [("dbname=postgres host=/var/run/postgresql",), ("on_start", "primary", "sikka-growth")],
    ids=["post_bootstrap", "on_start"],
)
def test_patroni_roles_script_applies_the_roles_on_the_leader(tmp_path, args) -> None:  # type: ignore[no-untyped-def]
    """As post_bootstrap and as a leader's callback, without Patroni's own variables, the
    role script sends the start-up SQL as the superuser, committing locally."""
    sent = run_roles_script(tmp_path, *args)
    header = "PGPASSWORD=su'per PGOPTIONS=-c synchronous_commit=local"
    assert f"-d postgres {header}" in sent and f"-d sikka {header}" in sent
    body = "".join(line + "\n" for line in sent.splitlines() if not line.startswith("-- psql"))
    assert body.startswith(
        startup_sql(
            "sikka",
            superuser_password="su'per",
            password="a$pp",
            replication_password="re`pl",
            keep_slots=[],
            monitoring_password="mo'n$",
        )
    )
    assert body.endswith(database_sql("sikka", "sikka"))
    # The rewind role, with its password, whether Patroni bootstrapped the cluster or took
    # it over from a plain primary (then it has none).
    assert rewind_role_sql("rew'ind") in body  # the shell prints the Python SQL exactly
    assert 'THEN CREATE ROLE "rewinder";' in body
    assert (
        'ALTER ROLE "rewinder" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
        "NOBYPASSRLS PASSWORD 'rew''ind';" in body
    )
    assert (
        'GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO "rewinder";'
        in body
    )


def test_patroni_roles_script_sets_the_cluster_configuration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Patroni reads bootstrap.dcs once: the leader sets the stack's cluster configuration
    again through its own REST API, the password on curl's stdin, never in its arguments."""
    run_roles_script(tmp_path, "on_role_change", "primary", "sikka-growth")
    sent = (tmp_path / "curl.log").read_text().splitlines()
    arguments, config = sent[0], sent[1:]
    assert 'a"p' not in arguments
    assert config == ['user = "patroni:a\\"p\\\\i"']
    document = json.loads(arguments.split("--data ")[1].split(" http")[0])
    spec = parse({"sikka:phase": "growth"}, stack="growth")
    assert document == json.loads(json.dumps(cluster_configuration(spec)))
    assert document["synchronous_mode"] is True and document["ttl"] == 20
    # As post_bootstrap it leaves that to Patroni, which writes bootstrap.dcs right after.
    (tmp_path / "curl.log").write_text("")
    run_roles_script(tmp_path, "dbname=postgres host=/var/run/postgresql")
    assert (tmp_path / "curl.log").read_text() == ""
    assert arguments.endswith(
        "-X PATCH -H Content-Type: application/json --data "
        f"{arguments.split('--data ')[1].split(' http')[0]} "
        "http://127.0.0.1:8008/config"
    )


@pytest.mark.parametrize("role", ["replica", "standby_leader", "demoted"])
def test_patroni_roles_script_leaves_replicas_alone(tmp_path, role: str) -> None:  # type: ignore[no-untyped-def]
    assert run_roles_script(tmp_path, "on_role_change", role, "sikka-growth") == ""


SCALE_ON_DOCKER = {
    "sikka:platform": "docker",
    "sikka:autoscaling": {"enabled": False},
    "sikka:postgres": {"mode": "replicated"},
}


CUTOVER = {"sikka:promoteFrom": "launch", "sikka:promoteCutover": True}


@pytest.mark.parametrize(
    ("stack", "overrides"),
    [
        ("launch", {}),
        ("growth", {}),
        ("scale", SCALE_ON_DOCKER),
        # A transition's cut-over: its guards (postgres-promote, redis-promote) and the key
        # import into a Redis Cluster (redis-import), on Docker and Kubernetes.
        ("growth", CUTOVER),
        ("growth", {**CUTOVER, "sikka:platform": "kubernetes"}),
        ("scale", {**SCALE_ON_DOCKER, **CUTOVER, "sikka:promoteForce": True}),
        ("scale", {**CUTOVER, "sikka:promoteFrom": "growth"}),
    ],
)
def test_every_container_shell_parses(stack: str, overrides: dict[str, object]) -> None:
    spec = parse({"sikka:phase": stack, **overrides}, stack=stack)
    nodes = build_topology(spec).nodes
    scripts = [
        node.entrypoint[2]
        for node in nodes
        if node.entrypoint and node.entrypoint[:2] == ("sh", "-c")
    ]
    scripts += [f.content for node in nodes for f in node.files if f.path.endswith(".sh")]
    if spec.promotion is not None:
        guards = {n.name for n in nodes if n.role == "promoter"}
        assert guards & {"redis-promote", "redis-import"}, guards
    if standby_guarded(spec):
        scripts.append(
            guard_job(spec).body["spec"]["template"]["spec"]["containers"][0]["command"][-1]
        )
    assert scripts
    for script in scripts:
        subprocess.run(["sh", "-n", "-c", script], check=True, timeout=10)

"""The shell that Docker entrypoints run to turn secrets into files and SQL, executed by
/bin/sh: it must produce byte for byte what the Python renderers (used by the local runner,
and proven there by the real servers) produce, whatever the password holds."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from scaling.render.pgbouncer import render_userlist_line, userlist_sh
from scaling.render.postgres_start import SQL_LITERAL_SH, startup_sql, startup_sql_sh
from scaling.render.redis import ESCAPE_PASSWORD_SH, render_sentinel_auth, sentinel_auth_sh
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
    assert sh(userlist_sh("sikka"), POSTGRES_PASSWORD=password) == render_userlist_line(
        "sikka", password
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
    printed = sh(script, POSTGRES_PASSWORD=password, REPLICATION_PASSWORD=password + "r")
    assert printed == startup_sql("sikka", password, password + "r" if replication else None, slots)


SCALE_ON_DOCKER = {
    "sikka:platform": "docker",
    "sikka:autoscaling": {"enabled": False},
    "sikka:postgres": {"mode": "replicated"},
}


@pytest.mark.parametrize(
    ("stack", "overrides"), [("launch", {}), ("growth", {}), ("scale", SCALE_ON_DOCKER)]
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
    assert scripts
    for script in scripts:
        subprocess.run(["sh", "-n", "-c", script], check=True, timeout=10)

"""The shell that Docker entrypoints run to turn secrets into files, executed by /bin/sh:
it must write byte for byte what the Python renderers (used by the local runner, and proven
there by the real servers) write, whatever the password holds."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from scaling.containers import build_containers
from scaling.render.pgbouncer import render_userlist_line, userlist_sh
from scaling.render.redis import ESCAPE_PASSWORD_SH, render_sentinel_auth, sentinel_auth_sh
from scaling.stackconfig import parse

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")

PASSWORDS = ["plain", 'q"uo\\te', "sp ace$%&'!`x`", '""']


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
    scripts = [
        part
        for tier in build_containers(spec).values()
        for container in tier
        for command in (container.entrypoint or (), container.command)
        if command[:2] == ("sh", "-c")
        for part in command[2:3]
    ]
    scripts += [
        f.content
        for tier in build_containers(spec).values()
        for container in tier
        for f in container.files
        if f.path.endswith(".sh")
    ]
    assert scripts
    for script in scripts:
        subprocess.run(["sh", "-n", "-c", script], check=True, timeout=10)

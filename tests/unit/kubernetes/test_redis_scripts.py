"""The Redis start and cluster-create scripts, run for real by /bin/sh with a fake CLI and
a fake getent on PATH: no server, no network."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from k8s_support import SPECS

from scaling.kubernetes import build_manifests
from scaling.kubernetes.redis import cluster_create_script, refresh_nodes_conf
from scaling.render.redis import SECRETS_FILE_SH, render_redis_secrets

pytestmark = pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")


def run(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{tmp_path / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": path, **env},
        check=False,
    )


def fake(tmp_path: Path, name: str, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(0o755)


def test_every_script_parses(tmp_path: Path) -> None:
    for phase in SPECS:
        for m in build_manifests(SPECS[phase]()):
            if m.kind in ("StatefulSet", "Job"):
                for c in m.body["spec"]["template"]["spec"]["containers"]:
                    if c["command"][:2] == ["sh", "-c"]:
                        result = run("set -n\n" + c["command"][2], tmp_path)
                        assert result.returncode == 0, f"{m.key}: {result.stderr}"


@pytest.mark.parametrize("password", ["plain", 'q"uo\\te', "sp ace$%&'!"])
def test_secrets_file_matches_the_shared_renderer(tmp_path: Path, password: str) -> None:
    result = run(SECRETS_FILE_SH, tmp_path, REDIS_PASSWORD=password)
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_redis_secrets(password)


def test_nodes_conf_peers_get_their_current_ip(tmp_path: Path) -> None:
    fake(
        tmp_path,
        "getent",
        'case "$2" in redis-1.h) echo "10.0.0.99     redis-1.h" ;; *) exit 2 ;; esac\n',
    )
    conf = tmp_path / "nodes.conf"
    conf.write_text(
        "aaa 10.0.0.1:6379@16379,redis-0.h myself,master - 0 0 1 connected 0-5460\n"
        "bbb 10.0.0.2:6379@16379,redis-1.h,shard-id=x master - 0 0 2 connected 5461-10922\n"
        "vars currentEpoch 6 lastVoteEpoch 0\n"
    )
    result = run(refresh_nodes_conf(str(tmp_path)), tmp_path)
    assert result.returncode == 0, result.stderr
    assert conf.read_text() == (
        # redis-0.h does not resolve here: its line is kept as it was.
        "aaa 10.0.0.1:6379@16379,redis-0.h myself,master - 0 0 1 connected 0-5460\n"
        "bbb 10.0.0.99:6379@16379,redis-1.h,shard-id=x master - 0 0 2 connected 5461-10922\n"
        "vars currentEpoch 6 lastVoteEpoch 0\n"
    )


def _fake_cli(tmp_path: Path, cluster_info: str) -> Path:
    log = tmp_path / "calls.log"
    fake(
        tmp_path,
        "valkey-cli",
        f'echo "$*" >> {log}\n'
        'case "$*" in\n'
        '  *" ping") echo PONG ;;\n'
        f'  *"cluster info") printf "{cluster_info}" ;;\n'
        "esac\n",
    )
    return log


def test_cluster_create_runs_on_a_fresh_set_of_nodes(tmp_path: Path) -> None:
    log = _fake_cli(tmp_path, "cluster_state:fail\\r\\ncluster_known_nodes:1\\r\\n")
    result = run(cluster_create_script(SPECS["scale"]()), tmp_path, REDIS_PASSWORD="pw")
    assert result.returncode == 0, result.stderr
    create = [line for line in log.read_text().splitlines() if "--cluster create" in line]
    assert len(create) == 1
    assert create[0].count(":6379") == 6
    assert create[0].endswith("--cluster-replicas 1 --cluster-yes")


@pytest.mark.parametrize(
    "info",
    [
        "cluster_state:ok\\r\\ncluster_known_nodes:6\\r\\n",
        # Formed but degraded (a master down): never re-create over it.
        "cluster_state:fail\\r\\ncluster_known_nodes:6\\r\\n",
    ],
)
def test_cluster_create_leaves_a_formed_cluster_alone(tmp_path: Path, info: str) -> None:
    log = _fake_cli(tmp_path, info)
    result = run(cluster_create_script(SPECS["scale"]()), tmp_path, REDIS_PASSWORD="pw")
    assert result.returncode == 0, result.stderr
    assert "already formed" in result.stdout
    assert "--cluster create" not in log.read_text()

"""The Redis start and cluster-init scripts as the Kubernetes objects carry them, run for
real by /bin/sh with a fake CLI and a fake getent on PATH: no server, no network."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from k8s_support import SPECS, find, on_kubernetes

from scaling.kubernetes import build_manifests
from scaling.render.redis import SECRETS_FILE_SH, render_redis_secrets
from scaling.render.redis_start import refresh_nodes_conf

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


def _fake_cli(tmp_path: Path, *, formed: bool) -> Path:
    """A valkey-cli whose nodes report one known node until `--cluster create` ran (or
    from the start, with ``formed``), six after."""
    log = tmp_path / "calls.log"
    state = tmp_path / "formed"
    if formed:
        state.touch()
    fake(
        tmp_path,
        "valkey-cli",
        f'echo "$*" >> {log}\n'
        'case "$*" in\n'
        '  *" ping") echo PONG ;;\n'
        f'  *"--cluster create"*) touch {state} ;;\n'
        f'  *"cluster info") if [ -e {state} ]; then n=6; else n=1; fi\n'
        '    printf "cluster_state:ok\\r\\ncluster_known_nodes:%s\\r\\n" "$n" ;;\n'
        '  *"cluster myid") echo abc ;;\n'
        "esac\n",
    )
    return log


def _job_script() -> str:
    job = find(build_manifests(SPECS["scale"]()), "Job", "redis-cluster-init")
    script: str = job.body["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    return script


def test_cluster_init_creates_a_fresh_cluster_from_its_masters(tmp_path: Path) -> None:
    log = _fake_cli(tmp_path, formed=False)
    result = run(_job_script(), tmp_path, REDIS_PASSWORD="pw")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    create = [line for line in calls if "--cluster create" in line]
    assert len(create) == 1
    assert create[0].count(":6379") == 3
    assert create[0].endswith("--cluster-replicas 0 --cluster-yes")
    assert not [line for line in calls if "rebalance" in line]


def test_cluster_init_leaves_a_formed_cluster_alone(tmp_path: Path) -> None:
    log = _fake_cli(tmp_path, formed=True)
    result = run(_job_script(), tmp_path, REDIS_PASSWORD="pw")
    assert result.returncode == 0, result.stderr
    calls = log.read_text()
    assert "--cluster create" not in calls
    assert "add-node" not in calls
    assert "cluster of 6 nodes in place" in result.stdout


def test_cluster_init_joins_added_nodes_and_rebalances(tmp_path: Path) -> None:
    """A fourth master (redis-6) and its replica (redis-7) added to a formed cluster of
    six: both join, the replica under its own master, and the slots are rebalanced."""
    spec = on_kubernetes("scale", **{"sikka:redis": {"masters": 4}})
    job = find(build_manifests(spec), "Job", "redis-cluster-init")
    script = job.body["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    log = tmp_path / "calls.log"
    fake(
        tmp_path,
        "valkey-cli",
        f'echo "$*" >> {log}\n'
        'case "$1 $2" in -h\\ redis-[67].*) new=1 ;; *) new=0 ;; esac\n'
        'case "$*" in\n'
        '  *" ping") echo PONG ;;\n'
        '  *"--cluster add-node"*) touch "' + str(tmp_path) + '/added-${3%%.*}" ;;\n'
        '  *"cluster info") n=8\n'
        '    if [ "$new" = 1 ] && [ ! -e "' + str(tmp_path) + '/added-${2%%.*}" ]; then n=1; fi\n'
        '    printf "cluster_known_nodes:%s\\r\\n" "$n" ;;\n'
        '  *"cluster myid") echo id-of-$2 ;;\n'
        '  *"info replication") echo "slave0:ip=r,port=6379,state=online" ;;\n'
        "esac\n",
    )
    result = run(script, tmp_path, REDIS_PASSWORD="pw")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert not [c for c in calls if "--cluster create" in c]
    added = [c for c in calls if "--cluster add-node" in c]
    assert [c.split()[2].split(".")[0] for c in added] == ["redis-6", "redis-7"]
    assert "--cluster-slave --cluster-master-id id-of-redis-6." in added[1]
    # The empty new master accepts the join's writes, then gets its write floor back.
    floors = [c.split()[-1] for c in calls if "config set min-replicas-to-write" in c]
    assert floors == ["0", "1"]
    assert any("--cluster rebalance" in c and "--cluster-use-empty-masters" in c for c in calls)

"""`sikka-scaling validate` and `render`, called as main(argv)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scaling.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_validate_accepts_every_stack(capsys: pytest.CaptureFixture[str]) -> None:
    for stack in ("launch", "growth", "scale"):
        assert main(["validate", str(ROOT / f"Pulumi.{stack}.yaml")]) == 0
    out = capsys.readouterr().out
    assert "Pulumi.growth.yaml: ok (growth phase on docker" in out


def test_validate_prints_every_problem_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.growth.yaml"
    stack.write_text(
        "config:\n  sikka:phase: growth\n  sikka:redis:\n    sentinels: 4\n"
        "  sikka:postgres:\n    readReplicas: -2\n"
    )
    assert main(["validate", str(stack)]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s) in Pulumi.growth.yaml; nothing was registered:" in err
    assert "Pulumi.growth.yaml: sikka:postgres.readReplicas: input should be greater" in err
    assert "Pulumi.growth.yaml: sikka:redis.sentinels: Sentinel needs an odd number" in err


def test_validate_unknown_stack_is_a_usage_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "staging"]) == 2


@pytest.mark.parametrize(
    ("stack", "expected", "absent"),
    [
        (
            "launch",
            {
                "docker-compose.yml",
                "nginx.conf",
                "postgresql.conf",
                "pg_hba.conf",
                "redis.conf",
                ".env",
            },
            {"pgbouncer.ini", "sentinel.conf"},
        ),
        (
            "growth",
            {
                "docker-compose.yml",
                "nginx.conf",
                "pgbouncer-0.ini",
                "pgbouncer-1.ini",
                "pgbouncer_hba.conf",
                "patroni-postgres-0.yml",
                "patroni-postgres-1.yml",
                "patroni-postgres-2.yml",
                "patroni-roles.sh",
                "haproxy.cfg",
                "redis.conf",
                "sentinel.conf",
                ".env",
            },
            # Patroni writes the members' server configuration itself.
            {"postgresql.conf", "pg_hba.conf", "replica-start.sh", "primary-start.sh"},
        ),
    ],
)
def test_render_writes_the_phase_files(
    tmp_path: Path, stack: str, expected: set[str], absent: set[str]
) -> None:
    assert main(["render", stack, "--out", str(tmp_path)]) == 0
    written = {p.name for p in tmp_path.iterdir()}
    assert expected <= written
    assert not absent & written
    # Every file a compose service mounts was written beside it, and every build context is
    # a folder of the project.
    import yaml

    compose = yaml.safe_load((tmp_path / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (tmp_path / source).is_file(), (name, source)
        if "build" in service:
            assert (tmp_path / service["build"]["context"] / "Dockerfile").is_file(), name
    if stack == "growth":
        member = compose["services"]["sikka-growth-postgres-1"]
        assert "./patroni-postgres-1.yml:/etc/patroni/patroni.yml:ro" in member["volumes"]
        assert (tmp_path / member["build"]["context"]).resolve() == ROOT / "images/postgres-patroni"
        assert "name: postgres-1\n" in (tmp_path / "patroni-postgres-1.yml").read_text()


def test_rendered_env_has_the_seed_variables(tmp_path: Path) -> None:
    main(["render", "growth", "--out", str(tmp_path)])
    env = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert {
        k: env[k]
        for k in (
            "SCALING_PHASE",
            "DB_MAX_CONNECTIONS",
            "REDIS_MAX_CONNECTIONS",
            "WEBSOCKET_MAX_CONNECTIONS",
            "NGINX_WORKER_CONNECTIONS",
            "NGINX_WORKER_PROCESSES",
            "ENABLE_READ_REPLICAS",
            "ENABLE_REDIS_SENTINEL",
        )
    } == {
        "SCALING_PHASE": "growth",
        "DB_MAX_CONNECTIONS": "100",
        "REDIS_MAX_CONNECTIONS": "4000",
        "WEBSOCKET_MAX_CONNECTIONS": "2000",
        "NGINX_WORKER_CONNECTIONS": "2048",
        "NGINX_WORKER_PROCESSES": "3",
        "ENABLE_READ_REPLICAS": "true",
        "ENABLE_REDIS_SENTINEL": "true",
    }
    assert not any("PASSWORD" in key for key in env)


def test_render_scale_writes_the_registered_manifests(tmp_path: Path) -> None:
    import yaml

    from scaling.kubernetes import build_manifests
    from scaling.stackconfig import load_stack_file

    main(["render", "scale", "--out", str(tmp_path)])
    documents = list(yaml.safe_load_all((tmp_path / "manifests.yaml").read_text()))
    expected = build_manifests(load_stack_file(ROOT / "Pulumi.scale.yaml"))
    assert documents == [m.body for m in expected]
    assert "worker_connections 8192;" in (tmp_path / "nginx.conf").read_text()  # 4096 x 2 (gate)


def test_preview_lists_resources_and_secret_exports(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["preview", "launch", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    types = [r["type"] for r in document["resources"]]
    # PostgreSQL, Redis, a gateway, Nginx; Prometheus and its exporters (host, PostgreSQL,
    # Redis, Nginx).
    assert types.count("docker:index/container:Container") == 9
    # Besides, the passwords a later transition's target inherits (scaling.promotion).
    assert document["secret_exports"] == ["database_uri", "redis_uri", "transition_secrets"]
    envs = {r["name"]: r["secret_inputs"] for r in document["resources"]}
    assert envs["sikka-launch-redis-redis-0"] == ["envs"]


def test_local_start_without_a_run_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["local", "start", "growth", "postgres-0", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("local start growth postgres-0: no local run of 'growth' recorded in")


def test_scram_verifier_reads_the_password_on_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """For docker compose: the verifier an operator exports beside the password."""
    import base64
    import io

    from scaling.render.scram import scram_verifier

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret-pw\n"))
    assert main(["scram-verifier"]) == 0
    printed = capsys.readouterr().out.strip()
    salt = base64.b64decode(printed.split("$")[1].split(":")[1])
    assert len(salt) == 16
    assert printed == scram_verifier("s3cret-pw", salt)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["scram-verifier"]) == 1
    assert "no password on stdin" in capsys.readouterr().err


@pytest.mark.parametrize("stack", ["launch", "growth"])
def test_rendered_env_names_every_secret_compose_reads(tmp_path: Path, stack: str) -> None:
    """Every secret docker-compose.yml takes from the environment is listed in .env, each
    verifier with the command that makes it from its password."""
    main(["render", stack, "--out", str(tmp_path)])
    compose = (tmp_path / "docker-compose.yml").read_text()
    read = set(re.findall(r"\$\{([A-Z_]+):\?", compose))
    listed = {
        line[2:].split("=", 1)[0]: line[2:].split("=", 1)[1]
        for line in (tmp_path / ".env").read_text().splitlines()
        if line.startswith("# ") and "=" in line
    }
    assert "MONITORING_PASSWORD_SCRAM" in read
    assert read <= set(listed)
    assert listed["MONITORING_PASSWORD_SCRAM"] == (
        '$(printf %s "$MONITORING_PASSWORD" | sikka-scaling scram-verifier)'
    )
    assert listed["MONITORING_PASSWORD"] == "..."

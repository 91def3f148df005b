"""`sikka-scaling check|status|summary`: what a misuse or a missing phase answers (no
server involved: the live behaviour is tested in tests/integration/test_check_*.py)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.pulumi_stack import run_stack

from scaling.cli import main
from scaling.metrics import direct


@pytest.fixture(autouse=True)
def empty_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIKKA_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


@pytest.mark.parametrize("command", ["check", "status", "summary"])
def test_no_running_phase_says_where_it_looked(
    command: str,
    empty_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (empty_state / "no-pulumi").mkdir()
    monkeypatch.setenv("PATH", str(empty_state / "no-pulumi"))
    assert main([command, "launch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"check launch: no running local phase in {empty_state / 'state' / 'launch'} "
        "(no state.json): start one with `sikka-scaling local up <stack>` or give "
        "--endpoints FILE; "
    )
    assert "the Pulumi CLI is not on PATH, so no stack outputs are read" in err


def fake_pulumi(folder: Path, outputs: dict[str, Any], answer: int = 0, stderr: str = "") -> Path:
    """A `pulumi` executable that answers `stack output --json --show-secrets` the way the
    CLI does, after checking its arguments; it records each call (argv, cwd) in calls.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "outputs.json").write_text(json.dumps(outputs))
    script = folder / "pulumi"
    script.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import json, os, sys
            from pathlib import Path
            here = Path({str(folder)!r})
            with open(here / "calls.jsonl", "a") as calls:
                calls.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd()}}) + "\\n")
            args = sys.argv[1:]
            if args[:2] != ["stack", "output"] or "--json" not in args or "--show-secrets" not in args:
                sys.exit(f"unexpected arguments {{args}}")
            if {answer}:
                sys.stderr.write({stderr!r})
                sys.exit({answer})
            print(json.dumps(json.loads((here / "outputs.json").read_text()), indent=2))
            """
        )
    )
    script.chmod(0o755)
    return folder


def calls(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]


@pytest.fixture
def launch_outputs() -> dict[str, Any]:
    run = run_stack("launch")
    # `pulumi stack output --json` prints JSON: what does not survive JSON is no output.
    return dict(json.loads(json.dumps(run.exports)))


def _on_path(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    assert shutil.which("pulumi") == str(folder / "pulumi")


@pytest.mark.parametrize("explicit", [True, False], ids=["--pulumi-stack", "no-local-phase"])
def test_stack_outputs_through_the_pulumi_cli(
    explicit: bool,
    tmp_path: Path,
    launch_outputs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bin_dir = fake_pulumi(tmp_path / "bin", launch_outputs)
    _on_path(monkeypatch, bin_dir)
    monkeypatch.delenv("PGBOUNCER_ADMIN_PASSWORD", raising=False)
    source = ["--pulumi-stack", "launch"] if explicit else []
    code = main(["check", "launch", *source, "--no-host", "--no-history", "--json"])
    out, err = capsys.readouterr()
    [call] = calls(bin_dir)
    assert call["argv"][:2] == ["stack", "output"]
    assert {"--json", "--show-secrets", "--non-interactive"} <= set(call["argv"])
    assert call["argv"][call["argv"].index("--stack") + 1] == "launch"
    assert (Path(call["cwd"]) / "Pulumi.yaml").is_file()
    document = json.loads(out)
    readings = document["readings"]
    hosts = {"postgres", "redis", "gateway-0", "nginx"}
    if any(direct._resolves(h) for h in hosts):
        pytest.skip("this machine resolves the stack's Docker names: it is inside the network")
    assert code == 6, err
    # Every part the outputs name, none measured, each with the reason: not a zero.
    assert {r["tier"] for r in readings} == {"postgres", "redis", "gateway", "nginx"}
    for r in readings:
        assert r["value"] is None and r["level"] == "unreachable"
        assert "on the Docker network 'sikka-launch', reachable only from inside it" in r["error"]
    assert len(document["unreachable"]) == len(readings)
    notes = " ".join(document["notes"])
    assert "endpoints from the outputs of the Pulumi stack 'launch'" in notes
    prometheus_url = launch_outputs["monitoring"]["prometheus_url"]
    assert (
        prometheus_url
        and f"--prometheus URL (the stack's Prometheus answers at {prometheus_url}" in notes
    )
    for secret_output in ("database_uri", "redis_uri"):
        password = launch_outputs[secret_output].split("://", 1)[1].rsplit("@", 1)[0]
        password = password.split(":", 1)[1]
        assert password not in out and password not in err


def test_stack_outputs_the_cli_refuses(
    tmp_path: Path,
    launch_outputs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    said = "error: no stack named 'launch' found\n"
    bin_dir = fake_pulumi(tmp_path / "bin", launch_outputs, answer=255, stderr=said)
    _on_path(monkeypatch, bin_dir)
    assert main(["check", "launch", "--no-history"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("check launch: no running local phase in ")
    assert (
        "`pulumi stack output --stack launch` failed: error: no stack named 'launch' found" in err
    )
    assert "for a deployed stack give --pulumi-stack NAME" in err


def test_stack_outputs_of_another_phase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    growth = dict(json.loads(json.dumps(run_stack("growth").exports)))
    _on_path(monkeypatch, fake_pulumi(tmp_path / "bin", growth))
    assert main(["check", "launch", "--pulumi-stack", "growth", "--no-history"]) == 1
    err = capsys.readouterr().err
    assert "phase is 'growth', but the stack file is of the launch phase" in err
    assert "generated-" not in err  # no secret value in the message


def test_one_source_of_endpoints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "launch", "--local", "--prometheus", "http://127.0.0.1:9"]) == 2
    assert "--local and --prometheus: give one source of endpoints" in capsys.readouterr().err


def test_window_must_be_a_duration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "launch", "--window", "soon"]) == 2
    assert "expected seconds or 30s / 10m / 1h, got 'soon'" in capsys.readouterr().err


def test_prometheus_keeps_no_history(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["check", "launch", "--prometheus", "http://127.0.0.1:9", "--watch", "5"])
    assert code == 2
    assert "Prometheus is the history" in capsys.readouterr().err


def test_unreadable_endpoints_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = tmp_path / "up.json"
    document.write_text("[]")
    assert main(["check", "launch", "--endpoints", str(document)]) == 1
    assert "not a `local up --json` document (no postgres key)" in capsys.readouterr().err


def test_bad_override_names_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "launch", "--set", "gateway.connectionsPerReplica=1"]) == 1
    assert "sikka:gateway.connectionsPerReplica" in capsys.readouterr().err


def test_pulumi_stack_without_the_cli(
    empty_state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (empty_state / "no-pulumi").mkdir()
    monkeypatch.setenv("PATH", str(empty_state / "no-pulumi"))
    assert main(["check", "launch", "--pulumi-stack", "launch"]) == 1
    err = capsys.readouterr().err
    assert "check launch: the Pulumi CLI is not on PATH: no stack outputs can be read" in err


def test_pulumi_stack_is_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "launch", "--local", "--pulumi-stack", "launch"]) == 2
    assert "--local and --pulumi-stack: give one source of endpoints" in capsys.readouterr().err

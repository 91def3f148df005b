"""`sikka-scaling check|status|summary`: what a misuse or a missing phase answers (no
server involved: the live behaviour is tested in tests/integration/test_check_*.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scaling.cli import main


@pytest.fixture(autouse=True)
def empty_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIKKA_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


@pytest.mark.parametrize("command", ["check", "status", "summary"])
def test_no_running_phase_says_where_it_looked(
    command: str, empty_state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "launch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"check launch: no running local phase in {empty_state / 'state' / 'launch'} "
        "(no state.json): start one with `sikka-scaling local up <stack>` or give "
        "--endpoints FILE; "
    )
    if shutil.which("pulumi") is None:
        assert "the Pulumi CLI is not on PATH, so no stack outputs are read" in err


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

"""`sikka-scaling token`: test tokens the gateways accept, minted from a local run's key
(or --secret-file) with the gateway's own signing helper, checked by its own verifier."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.auth import AuthError, TokenVerifier
from scaling.cli import main
from scaling.local.tokens import KEY_FILE, write_key

ROOT = Path(__file__).resolve().parents[2]
KEY = "local-run-key-" + "x" * 50


def mint(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["token", *args])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def test_token_from_the_local_run_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_key(tmp_path, KEY)
    assert path == tmp_path / KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    code, out, _ = mint(
        capsys,
        *("--stack", "launch", "--sub", "alice", "--role", "rider"),
        *("--trip", "T1", "--trip", "T2", "--ttl", "120", "--state-dir", str(tmp_path)),
    )
    assert code == 0
    claims = TokenVerifier(secret=KEY).verify(out)
    assert (claims.sub, claims.role, claims.trips) == ("alice", "rider", frozenset({"T1", "T2"}))
    with pytest.raises(AuthError):
        TokenVerifier(secret="another-key-" + "y" * 40).verify(out)


def test_token_carries_the_stacks_issuer_and_audience(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.launch-eu.yaml"
    stack.write_text(
        "config:\n  sikka:phase: launch\n  sikka:gateway:\n    auth:\n"
        "      issuer: https://id.example.com/\n      audience: sikka\n"
    )
    secret = tmp_path / "key"
    secret.write_text(KEY + "\n")
    code, out, _ = mint(
        capsys,
        *("--stack", str(stack), "--sub", "ops-1", "--role", "ops", "--secret-file", str(secret)),
    )
    assert code == 0
    verifier = TokenVerifier(secret=KEY, issuer="https://id.example.com/", audience="sikka")
    assert verifier.verify(out).role == "ops"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--role", "admin", "--trip", "T1"),
            "--role must be one of rider, driver, ops (got 'admin')",
        ),
        (
            ("--role", "rider", "--trip", "{T1}"),
            "--trip '{T1}': a trip id is 1-64 characters of [A-Za-z0-9._:-]",
        ),
        (("--role", "rider", "--ttl", "0"), "--ttl must be between 1 and 2592000 seconds"),
    ],
)
def test_bad_claims_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    write_key(tmp_path, KEY)
    code, out, err = mint(
        capsys, "--stack", "launch", "--sub", "a", "--state-dir", str(tmp_path), *args
    )
    assert (code, out) == (1, "")
    assert err == f"sikka-scaling token: {message}"


def test_no_local_run_no_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = mint(
        capsys, "--stack", "growth", "--sub", "a", "--role", "rider", "--state-dir", str(tmp_path)
    )
    assert code == 1
    assert f"no local run of 'growth' holds a gateway key at {tmp_path}/{KEY_FILE}" in err
    short = tmp_path / "short"
    short.write_text("tiny")
    code, _, err = mint(
        capsys, "--stack", "growth", "--sub", "a", "--role", "rider", "--secret-file", str(short)
    )
    assert code == 1 and "an HS256 key has at least 32 bytes" in err


def test_a_jwks_stack_is_told_to_use_its_identity_provider(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.scale-idp.yaml"
    stack.write_text(
        "config:\n  sikka:phase: scale\n  sikka:gateway:\n    auth:\n"
        "      jwksUrl: https://id.example.com/jwks.json\n"
    )
    code, _, err = mint(capsys, "--stack", str(stack), "--sub", "a", "--role", "rider")
    assert code == 1
    assert "verifies tokens against https://id.example.com/jwks.json" in err


def test_validate_says_when_authentication_is_disabled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.launch.yaml"
    stack.write_text(
        "config:\n  sikka:phase: launch\n  sikka:gateway:\n    auth:\n      mode: disabled\n"
    )
    assert main(["validate", str(stack)]) == 0
    out = capsys.readouterr().out
    assert (
        "note: sikka:gateway.auth.mode is 'disabled': any client may subscribe and publish" in out
    )
    assert main(["validate", str(ROOT / "Pulumi.launch.yaml")]) == 0
    assert "disabled" not in capsys.readouterr().out


def test_a_stack_without_authentication_needs_no_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = tmp_path / "Pulumi.launch-open.yaml"
    stack.write_text(
        "config:\n  sikka:phase: launch\n  sikka:gateway:\n    auth:\n      mode: disabled\n"
    )
    code, _, err = mint(capsys, "--stack", str(stack), "--sub", "a", "--role", "rider")
    assert code == 1
    assert "runs its gateways with gateway.auth.mode 'disabled': they need no token" in err

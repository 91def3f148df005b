"""`sikka-scaling serve` refuses to start without a key source; `sikka-scaling api-token`
mints tokens the server accepts."""

from __future__ import annotations

import time

import jwt
import pytest
from support.api import SECRET, hs_verifier

from scaling.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


@pytest.fixture(autouse=True)
def no_key_source(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SIKKA_JWT_SECRET",
        "SIKKA_JWT_JWKS_URL",
        "SIKKA_JWT_AUDIENCE",
        "SIKKA_JWT_ISSUER",
        "SIKKA_JWT_LEEWAY",
    ):
        monkeypatch.delenv(name, raising=False)


def test_serve_refuses_to_start_without_a_key_source(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "serve", "--stack", "launch")
    assert (code, out) == (1, "")
    assert err == (
        "serve: no key source: set SIKKA_JWT_SECRET (HS256, at least 32 bytes) or "
        "SIKKA_JWT_JWKS_URL (RS256/ES256 keys); the scaling API never runs without authentication"
    )


def test_serve_refuses_a_short_secret_without_printing_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIKKA_JWT_SECRET", "hunter2")
    code, _, err = run(capsys, "serve", "--stack", "launch")
    assert code == 1 and "hunter2" not in err
    assert (
        err
        == "serve: SIKKA_JWT_SECRET is 7 bytes: HS256 needs at least 32 (e.g. `openssl rand -hex 32`)"
    )


def test_serve_names_a_missing_stack(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIKKA_JWT_SECRET", SECRET)
    code, _, err = run(capsys, "serve", "--stack", "nowhere")
    assert code == 2 and err.startswith("sikka-scaling serve: Invalid value for --stack:")


def test_api_token_for_a_person_and_for_a_ci_job(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIKKA_JWT_SECRET", SECRET)
    code, out, err = run(capsys, "api-token", "--sub", "alice", "--role", "operator", "--ttl", "8h")
    assert code == 0 and err.startswith("token for alice (operator), valid until ")
    who = hs_verifier().verify(out)
    assert who.subject == "alice" and who.operator
    assert who.expires_at - time.time() == pytest.approx(8 * 3600, abs=5)

    code, out, _ = run(capsys, "api-token", "--sub", "ci:nightly-check", "--ttl", "600")
    who = hs_verifier().verify(out)
    assert code == 0 and who.roles == {"viewer"} and not who.operator
    assert jwt.get_unverified_header(out)["alg"] == "HS256"


def test_api_token_carries_issuer_and_audience_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIKKA_JWT_SECRET", SECRET)
    monkeypatch.setenv("SIKKA_JWT_ISSUER", "https://ops.example")
    monkeypatch.setenv("SIKKA_JWT_AUDIENCE", "sikka-staging")
    _, out, _ = run(capsys, "api-token", "--sub", "bob")
    claims = jwt.decode(out, SECRET, algorithms=["HS256"], audience="sikka-staging")
    assert claims["iss"] == "https://ops.example" and claims["roles"] == ["viewer"]


def test_api_token_refuses_without_a_secret_or_with_an_unknown_role(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(capsys, "api-token", "--sub", "alice")
    assert (code, out) == (1, "")
    assert err.startswith("api-token: SIKKA_JWT_SECRET is not set")
    monkeypatch.setenv("SIKKA_JWT_SECRET", SECRET)
    code, out, err = run(capsys, "api-token", "--sub", "alice", "--role", "admin")
    assert (code, out, err) == (1, "", "api-token: unknown role(s) admin: one of viewer, operator")


def test_serve_refuses_conflicting_sources_before_listening(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIKKA_JWT_SECRET", SECRET)
    code, _, err = run(
        capsys, "serve", "--stack", "launch", "--local", "--prometheus", "http://127.0.0.1:9"
    )
    assert code == 1
    assert err == (
        "serve: Invalid value for --prometheus: --local and --prometheus: give one source of "
        "endpoints"
    )

"""The scaling API started from outside (`sikka-scaling serve`, a subprocess with a secret
in its environment) over a real `local up` of the launch phase: every endpoint with and
without tokens of each kind, the documents against the CLI's, and the status page in
headless Debian chromium (selenium, the system chromedriver) seeing the bars, the chart,
and a recommendation once the test holds PostgreSQL over its critical level.

Set SIKKA_API_SCREENSHOT=<file.png> to keep the page's screenshot (the README's)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from check_helpers import run_check
from hypothesis import HealthCheck, given, settings
from local_helpers import Phase, pg_connect, wait_for
from support.api import SECRET, none_token, token

from scaling.local.ports import PortAllocator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WINDOW = "6s"  # a breach counts once held 6 s (samples at most 3 s apart)
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def phase(launch_phase: Phase) -> Phase:
    """The session's launch phase (conftest.py), left as this module found it."""
    return launch_phase


@pytest.fixture(scope="module")
def server(phase: Phase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = PortAllocator().take()
    folder = tmp_path_factory.mktemp("api")
    log = folder / "serve.log"
    env = {**os.environ, "SIKKA_JWT_SECRET": SECRET}
    env.pop("SIKKA_JWT_JWKS_URL", None)
    command = [
        sys.executable,
        *("-m", "scaling.cli", "serve", "--stack", "launch", "--local"),
        *("--state-dir", phase.run.state.state_dir, "--port", str(port)),
        *("--window", WINDOW, "--refresh", "1", "--no-host"),
        # Its own samples: the shared phase's history is the other modules' (and the
        # connections held over the critical level below stay out of it).
        *("--history", str(folder / "serve-history.jsonl")),
    ]
    with serving(command, env, log, port, "the API") as base:
        yield base
    text = log.read_text()
    print(text[-3000:])
    assert "INFO:     sikka.api: ops-alice logged in to the status page" in text
    # Tokens never reach the server's log: neither whole nor their signature.
    for made in SEEN_TOKENS:
        assert made not in text and made.split(".")[1] not in text


@contextmanager
def serving(
    command: list[str], env: dict[str, str], log: Path, port: int, what: str
) -> Iterator[str]:
    """`serve` started as a subprocess (its output in ``log``), its base URL once it
    answers /healthz; stopped by SIGTERM at the end (killed if it does not stop)."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            f"{what} answers /healthz",
            lambda: process.poll() is None and httpx.get(f"{base}/healthz").status_code == 200,
            timeout=60,
        )
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


SEEN_TOKENS: list[str] = []


def bearer(made: str) -> dict[str, str]:
    SEEN_TOKENS.append(made)
    return {"Authorization": f"Bearer {made}"}


def test_every_endpoint_with_tokens_of_each_kind(server: str) -> None:
    reads = [
        "/api/scaling/status",
        "/api/scaling/phase-summary",
        "/api/scaling/deployment-configs",
    ]
    bad = {
        "none": {},
        "expired": bearer(token(ttl=-120)),
        "not yet valid": bearer(token(nbf=time.time() + 600)),
        "wrong key": bearer(token(key="another-key-" + "x" * 40)),
        "wrong audience": bearer(token(aud="someone-else")),
        "alg none": bearer(none_token()),
    }
    with httpx.Client(base_url=server, timeout=60) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        for kind, headers in bad.items():
            for method, path in [("GET", p) for p in [*reads, "/api/scaling/transitions"]] + [
                ("POST", "/api/scaling/transition/growth")
            ]:
                response = client.request(method, path, headers=headers)
                assert response.status_code == 401, (kind, path, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer"), (kind, path)
        viewer = bearer(token(roles=["viewer"]))
        for path in reads:
            assert client.get(path, headers=viewer).status_code == 200, path
        # The transition log: its events (none yet), and whether one is running.
        log = client.get("/api/scaling/transitions", headers=viewer)
        assert log.status_code == 200 and set(log.json()) == {"message", "transitions", "running"}
        forbidden = client.post("/api/scaling/transition/growth", headers=viewer)
        assert forbidden.status_code == 403
        assert "lacks the 'operator' role" in forbidden.json()["message"]
        unknown = client.post(
            "/api/scaling/transition/huge", headers=bearer(token(roles=["operator"]))
        )
        assert (unknown.status_code, unknown.json()) == (
            422,
            {"message": "unknown phase 'huge': one of launch, growth, scale"},
        )
        spec = client.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_documents_are_the_checkers_and_configs_hold_no_secret(
    server: str, phase: Phase, tmp_path: Path
) -> None:
    headers = bearer(token())
    with httpx.Client(base_url=server, timeout=60, headers=headers) as client:
        status = client.get("/api/scaling/status", params={"history": "true"}).json()
        summary = client.get("/api/scaling/phase-summary").json()
        configs = client.get("/api/scaling/deployment-configs")
    _, cli_status = run_check(
        phase, "--local", "--no-host", "--history", str(tmp_path / "h.jsonl"), command="status"
    )
    document = status["status"]
    assert set(status) == {"message", "status", "history"}
    assert set(document) == set(cli_status)  # the very document `status --json` prints
    assert document["currentPhase"] == "launch" and document["nextPhase"] == "growth"
    database = document["infrastructure"]["database"]
    assert database["configuredMax"] == phase.spec.postgres.max_connections
    assert database["current"] >= 1 and database["level"] in ("optimal", "warning", "critical")
    assert status["history"]["points"] and status["history"]["thresholds"]["database"]
    assert summary["summary"]["currentPhase"] == "launch"
    assert set(summary) == {"message", "summary"}
    body = configs.json()
    assert set(body["configs"]) >= {
        "dockerCompose",
        "environmentVariables",
        "nginxConfig",
        "kubernetesManifests",
        "prometheusConfig",
        "alertRules",
    }
    for name, value in phase.run.secrets.items():
        assert value not in configs.text, f"the run's {name} appears in the configs"


def test_a_server_keyed_by_a_jwks_accepts_its_keys_only(phase: Phase, tmp_path: Path) -> None:
    """`serve` with SIKKA_JWT_JWKS_URL (an identity provider's key set, here a local
    http.server): an RS256 token of a published key reads; HS256 and unknown keys do not.
    (Key rotation: tests/unit/test_api_auth.py.)"""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.get_algorithm_by_name("RS256").to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "idp-1", "alg": "RS256", "use": "sig"}]})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    idp = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    port = PortAllocator().take()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIKKA_JWT_")}
    env["SIKKA_JWT_JWKS_URL"] = f"http://127.0.0.1:{idp.server_address[1]}/jwks.json"
    env["SIKKA_JWT_ISSUER"] = "https://idp.example"
    command = [
        sys.executable,
        *("-m", "scaling.cli", "serve", "--stack", "launch", "--local", "--no-history"),
        *("--state-dir", phase.run.state.state_dir, "--port", str(port), "--no-host"),
    ]
    log = tmp_path / "serve-jwks.log"
    try:
        with serving(command, env, log, port, "the JWKS-keyed API") as base:
            path = f"{base}/api/scaling/deployment-configs"
            signed = token(
                key=key, alg="RS256", headers={"kid": "idp-1"}, iss="https://idp.example"
            )
            assert httpx.get(path, headers=bearer(signed), timeout=30).status_code == 200
            refused = {
                "hs256": token(),
                "unknown kid": token(key=key, alg="RS256", headers={"kid": "idp-9"}),
                "wrong issuer": token(key=key, alg="RS256", headers={"kid": "idp-1"}, iss="x"),
            }
            for kind, made in refused.items():
                response = httpx.get(path, headers=bearer(made), timeout=30)
                assert response.status_code == 401, (kind, response.text)
    finally:
        idp.shutdown()
        idp.server_close()
    assert "tokens: RS256/ES256 (SIKKA_JWT_JWKS_URL)" in log.read_text()


LIVE_READS = r"^/api/scaling/(status|phase-summary|deployment-configs)$"


def test_fuzzed_reads_of_the_live_phase_find_no_server_error(server: str) -> None:
    """schemathesis over the running server's own /openapi.json, for the reads (the
    transition paths: tests/unit/test_api_fuzz.py, where a stand-in keeps them from moving
    a phase): no 5xx, answers as declared, with the live phase's real documents."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json").include(path_regex=LIVE_READS)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert sorted(o.path for o in operations) == [
        "/api/scaling/deployment-configs",
        "/api/scaling/phase-summary",
        "/api/scaling/status",
    ]
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    headers = bearer(token())
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=headers, timeout=60, checks=checks)

        fuzz()


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMEDRIVER).exists() and Path(CHROMIUM).exists()):
        pytest.fail("chromium and chromium-driver are not installed (make system-packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1100,1500",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_status_page_in_chromium_shows_a_recommendation_under_load(
    server: str, phase: Phase, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    held: list[psycopg.Connection[Any]] = []
    try:
        browser.get(server + "/")
        assert browser.current_url.endswith("/login")
        browser.find_element(By.ID, "token").send_keys(token(roles=["viewer"], sub="ops-alice"))
        browser.find_element(By.ID, "login-submit").click()
        wait = WebDriverWait(browser, 60)
        wait.until(
            seen.presence_of_element_located((By.CSS_SELECTOR, '.tier[data-tier="database"]'))
        )
        tiers = browser.find_elements(By.CSS_SELECTOR, ".tier")
        assert {t.get_attribute("data-tier") for t in tiers} == {
            "database",
            "redis",
            "websocket",
            "nginx",
        }
        # uPlot draws the history into a canvas, with a series per tier and the thresholds.
        wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, "#chart canvas")))
        legend = browser.find_element(By.ID, "chart").text
        assert "database" in legend and "critical 80 %" in legend, legend
        assert not browser.find_elements(By.CSS_SELECTOR, ".rec-immediate")

        # Hold PostgreSQL connections past the critical level (80 % of max_connections).
        limit = phase.spec.postgres.max_connections
        primary = phase.summary["postgres"]["primary"]
        with httpx.Client(base_url=server, timeout=60, headers=bearer(token())) as client:
            current = client.get("/api/scaling/status").json()["status"]["infrastructure"]
            now = int(current["database"]["current"] or 0)
            wanted = int(0.8 * limit) + 1 - now  # the check's own connection comes on top
            for _ in range(max(0, wanted)):
                held.append(pg_connect(phase, primary))

            def recommended() -> bool:
                client.get("/api/scaling/status")  # more samples beside the page's own
                found = browser.find_elements(By.CSS_SELECTOR, ".rec-immediate")
                return any("growth" in f.text for f in found)

            waited = wait_for(
                "the page shows a recommendation", recommended, timeout=90, interval=0.5
            )
        print(f"recommendation shown {waited:.1f} s after holding {len(held)} connections")
        bar = browser.find_element(By.CSS_SELECTOR, '.tier[data-tier="database"]')
        assert bar.get_attribute("data-level") == "critical"
        assert browser.find_element(By.ID, "verdict-label").text in ("recommend", "critical")
        shot = tmp_path / "status-page.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        keep = os.environ.get("SIKKA_API_SCREENSHOT")
        if keep:
            shutil.copyfile(shot, keep)
    finally:
        for conn in held:
            conn.close()
        browser.quit()

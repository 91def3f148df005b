"""The scaling API's HTTP layer: the seed's paths and shapes, auth on every endpoint, and
the transition endpoints against a stand-in service (the FastAPI dependency overridden)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.api import FakeDocuments, FakeService, hs_verifier, none_token, token

from scaling.api.app import COOKIE, ServerSettings, create_app, get_transition_service
from scaling.api.documents import CONFIG_FILES

# The seed's ScalingController: path -> (method, payload key, payload keys).
SEED_STATUS_KEYS = {
    "currentPhase",
    "nextPhase",
    "currentCapacity",
    "phaseProgress",
    "recommendations",
    "infrastructure",
    "timeline",
}
SEED_CAPACITY_KEYS = {"maxConcurrentUsers", "maxConcurrentTrips", "utilizationPercentage"}
SEED_PROGRESS_KEYS = {"completedActions", "pendingActions", "criticalActions", "progressPercentage"}
SEED_RECOMMENDATION_BUCKETS = {"immediate", "shortTerm", "longTerm"}
SEED_INFRASTRUCTURE = {"database", "redis", "websocket", "nginx"}
SEED_CONFIG_KEYS = {
    "dockerCompose",
    "environmentVariables",
    "nginxConfig",
    "kubernetesManifests",
    "prometheusConfig",
    "alertRules",
}
SEED_RESULT_KEYS = {"success", "message", "actions", "nextSteps"}

READ_PATHS = [
    "/api/scaling/status",
    "/api/scaling/phase-summary",
    "/api/scaling/deployment-configs",
    "/api/scaling/transitions",
]


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def docs() -> FakeDocuments:
    return FakeDocuments("launch")


@pytest.fixture
def client(docs: FakeDocuments, service: FakeService, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(
        docs, hs_verifier(), ServerSettings(from_stack="launch", local=True, state_root=tmp_path)
    )
    app.dependency_overrides[get_transition_service] = lambda: service
    with TestClient(app) as c:
        yield c


def auth(*roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(roles=list(roles))}"}


def test_status_has_the_seeds_shape(client: TestClient) -> None:
    response = client.get("/api/scaling/status", headers=auth("viewer"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"message", "status", "history"} and body["history"] is None
    assert body["message"] == "status of launch (launch phase): ok"
    status = body["status"]
    assert set(status) >= SEED_STATUS_KEYS
    assert status["currentPhase"] == "launch" and status["nextPhase"] == "growth"
    assert set(status["currentCapacity"]) >= SEED_CAPACITY_KEYS
    assert set(status["phaseProgress"]) >= SEED_PROGRESS_KEYS
    assert set(status["recommendations"]) == SEED_RECOMMENDATION_BUCKETS
    assert set(status["infrastructure"]) == SEED_INFRASTRUCTURE
    assert status["infrastructure"]["database"]["current"] == 5.0
    assert status["notes"] == ["a note"]


def test_status_with_history_carries_each_tier_and_the_thresholds(client: TestClient) -> None:
    body = client.get("/api/scaling/status?history=true", headers=auth()).json()
    history = body["history"]
    assert history["tiers"] == ["database", "redis", "websocket", "nginx"]
    assert [p["database"] for p in history["points"]] == [20.0, 25.0, 25.0]  # of 20 connections
    assert history["thresholds"]["database"] == {
        "warningFrom": 60.0,
        "criticalFrom": 80.0,
        "thresholdKey": "thresholds.connectionsPercent",
    }
    assert history["thresholds"]["redis"]["criticalFrom"] == 70.0


def test_a_sustained_breach_shows_as_the_immediate_recommendation(
    client: TestClient, docs: FakeDocuments
) -> None:
    docs.db = [18.0, 18.0, 18.0, 19.0, 19.0]  # 90-95 % of 20 for 20 s, over a 15 s window
    body = client.get("/api/scaling/phase-summary", headers=auth()).json()
    summary = body["summary"]
    assert body["message"] == f"summary of launch (launch phase): {summary['verdict']}"
    assert summary["verdict"] == "recommend" and summary["currentPhase"] == "launch"
    assert summary["immediate"] and "growth" in summary["immediate"][0]


def test_an_unmeasurable_phase_is_503_with_the_checkers_reason(
    client: TestClient, docs: FakeDocuments
) -> None:
    docs.unavailable = "check launch: no local run of launch"
    for path in ("/api/scaling/status", "/api/scaling/phase-summary"):
        response = client.get(path, headers=auth())
        assert response.status_code == 503
        assert response.json() == {
            "message": "cannot measure now: check launch: no local run of launch"
        }


def test_deployment_configs_have_the_seeds_keys_without_secret_values(
    client: TestClient,
) -> None:
    body = client.get("/api/scaling/deployment-configs", headers=auth()).json()
    assert body["message"] == "deployment configs of the launch phase"
    configs = body["configs"]
    assert set(configs) == SEED_CONFIG_KEYS | {"otherFiles"}
    assert configs["kubernetesManifests"] is None and "services:" in configs["dockerCompose"]
    assert "${DATABASE_PASSWORD" in configs["dockerCompose"]  # a reference, not a value
    assert "# DATABASE_PASSWORD=..." in configs["environmentVariables"]
    assert "groups:" in configs["alertRules"] and "scrape_configs" in configs["prometheusConfig"]
    assert "pg_hba.conf" in configs["otherFiles"]
    scale = client.get("/api/scaling/deployment-configs?phase=scale", headers=auth()).json()
    assert scale["message"] == "deployment configs of the scale phase"
    assert scale["configs"]["dockerCompose"] is None
    assert "kind: StatefulSet" in scale["configs"]["kubernetesManifests"]
    assert set(CONFIG_FILES) == SEED_CONFIG_KEYS


def test_an_unknown_phase_is_422_naming_the_phases(client: TestClient) -> None:
    response = client.get("/api/scaling/deployment-configs?phase=huge", headers=auth())
    assert response.status_code == 422
    assert response.json() == {"message": "unknown phase 'huge': one of launch, growth, scale"}
    response = client.post("/api/scaling/transition/huge", headers=auth("operator"))
    assert response.status_code == 422
    assert response.json() == {"message": "unknown phase 'huge': one of launch, growth, scale"}


@pytest.mark.parametrize(
    ("bearer", "reason"),
    [
        (None, "no bearer token"),
        (lambda: token(ttl=-60), "token expired"),
        (lambda: token(nbf=time.time() + 300), "token not yet valid (nbf/iat in the future)"),
        (lambda: token(key="w" * 40), "bad signature"),
        (lambda: token(aud="other"), "wrong audience (expected 'sikka-scaling')"),
        (lambda: none_token(), "algorithm 'none' not accepted (this server accepts HS256)"),
    ],
    ids=["none", "expired", "not-yet-valid", "wrong-key", "wrong-audience", "alg-none"],
)
def test_every_api_path_is_401_with_www_authenticate(
    client: TestClient, docs: FakeDocuments, bearer: object, reason: str
) -> None:
    headers = {} if bearer is None else {"Authorization": f"Bearer {bearer()}"}  # type: ignore[operator]
    calls = [("GET", p) for p in READ_PATHS] + [("POST", "/api/scaling/transition/growth")]
    for method, path in calls:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json() == {"message": f"unauthorized: {reason}"}
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="sikka-scaling"'), challenge
    assert docs.calls == 0  # nothing was measured for an unauthenticated caller


def test_a_transition_without_the_operator_role_is_403(
    client: TestClient, service: FakeService
) -> None:
    response = client.post("/api/scaling/transition/growth", headers=auth("viewer"))
    assert response.status_code == 403
    assert response.json() == {
        "message": "forbidden: alice lacks the 'operator' role a transition needs"
    }
    assert service.calls == []


def test_prepare_is_the_default_and_calls_the_service(
    client: TestClient, service: FakeService, tmp_path: Path
) -> None:
    response = client.post("/api/scaling/transition/growth", headers=auth("operator"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"] == "transition launch → growth prepared"
    assert set(body["result"]) == SEED_RESULT_KEYS
    assert body["result"]["actions"] == ["validate-target", "start-target"]
    assert service.calls == [
        (
            "prepare",
            "growth",
            {"from_stack": "launch", "force": False, "local": True, "state_root": tmp_path},
        )
    ]


def test_execute_starts_in_the_background_and_a_second_one_is_409(
    client: TestClient, service: FakeService
) -> None:
    service.hold.clear()  # the first execution stays running
    try:
        first = client.post(
            "/api/scaling/transition/growth", json={"execute": True}, headers=auth("operator")
        )
        assert first.status_code == 202, first.text
        assert set(first.json()["result"]) >= SEED_RESULT_KEYS
        assert first.json()["result"]["nextSteps"] == ["GET /api/scaling/transitions?stack=growth"]
        second = client.post(
            "/api/scaling/transition/growth", json={"execute": True}, headers=auth("operator")
        )
        assert second.status_code == 409
        assert second.json() == {"message": "a transition to growth is already running"}
        log = client.get("/api/scaling/transitions", headers=auth()).json()
        assert log["running"] is True
    finally:
        service.hold.set()
    executed = [c for c in service.calls if c[0] == "execute"]
    assert executed == [
        (
            "execute",
            "growth",
            {
                "from_stack": "launch",
                "force": False,
                "local": True,
                "state_root": executed[0][2]["state_root"],
                "retire": False,
            },
        )
    ]


def test_a_transition_running_elsewhere_is_409(client: TestClient, service: FakeService) -> None:
    service.running = True  # the service's lock is held by the CLI or another server
    response = client.post(
        "/api/scaling/transition/growth", json={"execute": True}, headers=auth("operator")
    )
    assert response.status_code == 409
    assert [c[0] for c in service.calls] == []


def test_busy_and_refused_from_the_service_are_409_and_422(
    client: TestClient, service: FakeService
) -> None:
    service.busy = "growth: another transition holds the lock"
    response = client.post(
        "/api/scaling/transition/growth", json={"execute": True, "wait": True},
        headers=auth("operator"),
    )  # fmt: skip
    assert (response.status_code, response.json()) == (
        409,
        {"message": "growth: another transition holds the lock"},
    )
    service.busy = None
    service.refuse = "launch → scale skips growth; --force to do it anyway"
    response = client.post("/api/scaling/transition/scale", headers=auth("operator"))
    assert (response.status_code, response.json()) == (
        422,
        {"message": "launch → scale skips growth; --force to do it anyway"},
    )


def test_execute_with_wait_answers_the_result(client: TestClient, service: FakeService) -> None:
    response = client.post(
        "/api/scaling/transition/growth",
        json={"execute": True, "wait": True, "force": True, "retire": True},
        headers=auth("operator"),
    )
    assert response.status_code == 200
    assert response.json()["result"] == {
        "success": True,
        "message": "moved to growth",
        "actions": ["promote-target"],
        "nextSteps": [],
    }
    assert service.calls[-1][2]["force"] is True and service.calls[-1][2]["retire"] is True


def test_unknown_body_fields_are_422(client: TestClient) -> None:
    response = client.post(
        "/api/scaling/transition/growth", json={"excute": True}, headers=auth("operator")
    )
    assert response.status_code == 422
    assert response.json()["message"].startswith("invalid request: body.excute: Extra inputs")


def test_transitions_reads_every_stacks_log_oldest_first(
    client: TestClient, service: FakeService
) -> None:
    service.events = {
        "growth": [{"transition": "t1", "step": "start-target", "event": "end", "at": 20.0}],
        "launch": [{"transition": "t0", "step": "validate-target", "event": "end", "at": 10.0}],
    }
    body = client.get("/api/scaling/transitions", headers=auth()).json()
    assert body["message"] == "2 transition event(s)" and body["running"] is False
    assert [e["transition"] for e in body["transitions"]] == ["t0", "t1"]
    one = client.get("/api/scaling/transitions?stack=growth", headers=auth()).json()
    assert [e["transition"] for e in one["transitions"]] == ["t1"]


def test_healthz_needs_no_token_and_openapi_declares_bearer(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A JWT (`sikka-scaling api-token`)",
    }
    for path in (*READ_PATHS, "/api/scaling/transition/{phase}"):
        for operation in spec["paths"][path].values():
            assert operation["security"] == [{"HTTPBearer": []}], path
    assert "security" not in spec["paths"]["/healthz"]["get"]
    missing = client.get("/api/scaling/nothing", headers=auth())
    assert (missing.status_code, missing.json()) == (404, {"message": "Not Found"})


def test_login_sets_an_httponly_cookie_the_page_and_reads_accept(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    bad = client.post("/login", data={"token": token(ttl=-100)})
    assert bad.status_code == 401 and "token expired" in bad.text
    good = client.post("/login", data={"token": token()}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/"
    cookie = good.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Max-Age=" in cookie
    page = client.get("/")
    assert page.status_code == 200 and 'data-tier="database"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/api/scaling/status").status_code == 200  # GET: the cookie counts
    # A POST never takes the cookie: a cross-site form cannot start a transition.
    assert client.post("/api/scaling/transition/growth").status_code == 401
    client.post("/logout")
    assert client.get("/partials/live").status_code == 401


def test_tokens_never_reach_the_logs(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    secret_token = token(roles=["operator"])
    caplog.set_level("DEBUG")
    client.post("/login", data={"token": secret_token})
    client.post(
        "/api/scaling/transition/growth",
        json={"execute": True, "wait": True},
        headers={"Authorization": f"Bearer {secret_token}"},
    )
    client.get("/api/scaling/status", headers={"Authorization": f"Bearer {token(ttl=-5)}"})
    assert secret_token not in caplog.text
    assert secret_token.split(".")[2] not in caplog.text
    assert "alice" in caplog.text  # who did it is logged

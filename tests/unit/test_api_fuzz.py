"""A schema-driven fuzz of the scaling API's OpenAPI document (schemathesis): generated
requests, with an operator's token and without, find no 5xx, and every answer matches the
status codes, content types and shapes the document declares.

The app is the real one (auth, validation, documents built by the checker's functions);
the measured phase and the transition service are the stand-ins of tests/support/api.py,
so the fuzz needs no running phase and stays bounded (a few seconds)."""

from __future__ import annotations

import typing

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.api import FakeDocuments, FakeService, hs_verifier, token

from scaling.api.app import PhaseName, ServerSettings, create_app, get_transition_service
from scaling.api.documents import PHASES

service = FakeService()
app = create_app(FakeDocuments("launch"), hs_verifier(), ServerSettings(from_stack="launch"))
app.dependency_overrides[get_transition_service] = lambda: service

schema = schemathesis.openapi.from_asgi("/openapi.json", app)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)


@schema.parametrize()
@FUZZ
def test_with_an_operator_token_nothing_is_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {token(roles=['operator'])}"}, checks=CHECKS
    )


@schema.parametrize()
@settings(FUZZ, max_examples=5)
def test_without_a_token_every_api_path_is_401(case: schemathesis.Case) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = headers
    response = case.call()
    assert response.status_code < 500
    declared = case.method.upper() == case.operation.method.upper()
    if case.path.startswith("/api/scaling") and declared:
        assert response.status_code == 401, (case.method, case.path, response.status_code)
        challenge = response.headers["www-authenticate"]
        assert challenge[0].startswith('Bearer realm="sikka-scaling"'), challenge


def test_the_schema_enum_is_the_phases() -> None:
    assert typing.get_args(PhaseName) == PHASES

"""The scaling API (FastAPI): the seed's ScalingController paths over the checker, the
renderers and the transitions, every ``/api/scaling`` path behind a bearer JWT, and the
status page.

Paths: ``GET /api/scaling/status``, ``GET /api/scaling/phase-summary``,
``GET /api/scaling/deployment-configs[?phase=]``, ``POST /api/scaling/transition/{phase}``,
``GET /api/scaling/transitions``; ``GET /healthz`` (no auth); ``GET /`` (the page, after
``/login``); ``/openapi.json``.

Status codes beyond 200: 202 a transition started, 401 no/bad token (with
``WWW-Authenticate: Bearer``), 403 a transition without the ``operator`` role, 409 a
transition already running or refused as the service's lock says, 422 unknown phase or a
refused transition, 503 the phase cannot be measured now or transitions are unavailable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from scaling.api import page
from scaling.api.auth import Principal, TokenRejected, Verifier
from scaling.api.documents import PHASES, Documents, Unavailable, UnknownPhase, check_phase
from scaling.api.transitions import (
    Background,
    ModuleService,
    TransitionService,
    result_dict,
)

log = logging.getLogger("sikka.api")

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "sikka_session"
COOKIE_MAX_AGE = 12 * 3600  # at most; never past the token's own expiry
PREFIX = "/api/scaling"
# The phases a path or query names (scaling.api.documents.PHASES, as the schema's enum).
PhaseName = Literal["launch", "growth", "scale"]
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
)


@dataclass
class ServerSettings:
    """What the app serves beside its documents."""

    from_stack: str
    local: bool = False
    state_root: Path | None = None
    refresh_seconds: float = 5.0


# ----------------------------------------------------------------------------- shapes


class Message(BaseModel):
    message: str


class StatusResponse(BaseModel):
    message: str
    status: dict[str, Any]
    history: dict[str, Any] | None = None


class SummaryResponse(BaseModel):
    message: str
    summary: dict[str, Any]


class Configs(BaseModel):
    dockerCompose: str | None
    environmentVariables: str
    nginxConfig: str | None
    kubernetesManifests: str | None
    prometheusConfig: str | None
    alertRules: str
    otherFiles: dict[str, str] = Field(default_factory=dict)


class ConfigsResponse(BaseModel):
    message: str
    configs: Configs


class TransitionRequest(BaseModel):
    """Prepare (the default) or execute the transition to the path's phase."""

    model_config = ConfigDict(extra="forbid")

    execute: bool = False
    force: bool = Field(False, description="Allow a skipped or backward transition")
    retire: bool = Field(False, description="After the cut-over, remove the source's front door")
    wait: bool = Field(
        False, description="With execute: answer when the transition ends (else 202 at once)"
    )


class TransitionResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    success: bool
    message: str
    actions: list[str]
    nextSteps: list[str]


class TransitionResponse(BaseModel):
    message: str
    result: TransitionResult


class TransitionsResponse(BaseModel):
    message: str
    transitions: list[dict[str, Any]]
    running: bool


class Health(BaseModel):
    status: str


# ------------------------------------------------------------------------ dependencies

bearer = HTTPBearer(auto_error=False, description="A JWT (`sikka-scaling api-token`)")


def _unauthorized(reason: str) -> HTTPException:
    safe = reason.replace('"', "'")
    return HTTPException(
        status_code=401,
        detail=f"unauthorized: {reason}",
        headers={"WWW-Authenticate": f'Bearer realm="sikka-scaling", error_description="{safe}"'},
    )


def get_documents(request: Request) -> Documents:
    return request.app.state.documents


def get_transition_service(request: Request) -> TransitionService:
    return request.app.state.transitions


def get_settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The bearer token's principal; on GET the status page's session cookie also counts
    (never on POST: a cross-site form cannot start a transition)."""
    verifier: Verifier = request.app.state.verifier
    token: str | None = None
    if credentials is not None:
        if credentials.scheme.lower() != "bearer":
            raise _unauthorized("expected a Bearer token")
        token = credentials.credentials
    elif request.method == "GET":
        token = request.cookies.get(COOKIE)
    if not token:
        raise _unauthorized("no bearer token")
    try:
        return verifier.verify(token)
    except TokenRejected as error:
        raise _unauthorized(str(error)) from None


def operator(who: Annotated[Principal, Depends(principal)]) -> Principal:
    if not who.operator:
        raise HTTPException(
            status_code=403,
            detail=f"forbidden: {who.subject} lacks the 'operator' role a transition needs",
        )
    return who


Reader = Annotated[Principal, Depends(principal)]
Operator = Annotated[Principal, Depends(operator)]
Docs = Annotated[Documents, Depends(get_documents)]
Service = Annotated[TransitionService, Depends(get_transition_service)]
Settings = Annotated[ServerSettings, Depends(get_settings)]

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Message, "description": "No token, or a bad, expired or wrong one"},
}
MEASURE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    503: {"model": Message, "description": "The phase cannot be measured now"},
}


# ------------------------------------------------------------------------------- app


def create_app(
    documents: Documents,
    verifier: Verifier,
    settings: ServerSettings,
    transitions: TransitionService | None = None,
) -> FastAPI:
    background = Background()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if background.running():
            # Data first: a stopping server lets a transition reach its end (or its step's
            # own rollback) instead of abandoning it mid-step.
            log.warning("waiting for the running transition to finish before stopping")
            background.join()

    app = FastAPI(
        title="sikka-scaling API",
        version="1",
        description=__doc__,
        lifespan=lifespan,
        responses={422: {"model": Message, "description": "Invalid request"}},
    )
    app.state.documents = documents
    app.state.verifier = verifier
    app.state.settings = settings
    app.state.transitions = transitions or ModuleService()
    app.state.background = background
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"message": str(error.detail)}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        for e in error.errors():
            loc = tuple(e.get("loc", ()))
            if loc[-1:] in (("phase",), ("stack",)) and loc[0] in ("path", "query"):
                # A phase outside the enum: the message names the phases, as the issue asks.
                message = str(UnknownPhase(str(e.get("input", ""))))
                return JSONResponse({"message": message}, status_code=422)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in error.errors()
        )
        return JSONResponse({"message": f"invalid request: {problems}"}, status_code=422)

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith(PREFIX) or request.url.path in ("/", "/login"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness, without auth: the process answers (the phase is not measured)."""
        return {"status": "ok"}

    @app.get(f"{PREFIX}/status", response_model=StatusResponse, responses=MEASURE_RESPONSES)
    def status(
        _: Reader,
        docs: Docs,
        history: Annotated[
            bool, Query(description="Add each tier's utilisation over the window")
        ] = False,
    ) -> dict[str, Any]:
        """The phase's status document, measured now (what `sikka-scaling status` prints)."""
        m = _measured(docs)
        verdict = m.status["verdict"]["verdict"]
        body: dict[str, Any] = {
            "message": f"status of {docs.stack} ({docs.phase} phase): {verdict}",
            "status": m.status,
        }
        if history:
            body["history"] = m.history
        return body

    @app.get(f"{PREFIX}/phase-summary", response_model=SummaryResponse, responses=MEASURE_RESPONSES)
    def phase_summary(_: Reader, docs: Docs) -> dict[str, Any]:
        """The short form of the status (what `sikka-scaling summary` prints)."""
        m = _measured(docs)
        return {
            "message": f"summary of {docs.stack} ({docs.phase} phase): {m.summary['verdict']}",
            "summary": m.summary,
        }

    @app.get(
        f"{PREFIX}/deployment-configs",
        response_model=ConfigsResponse,
        responses={**AUTH_RESPONSES, 422: {"model": Message, "description": "Unknown phase"}},
    )
    def deployment_configs(
        _: Reader,
        docs: Docs,
        phase: Annotated[
            PhaseName | None, Query(description="The phase (default: the served stack's)")
        ] = None,
    ) -> dict[str, Any]:
        """The deployment configs of the phase, rendered as `sikka-scaling render` renders
        them; secrets appear as references (variable names), never as values."""
        try:
            configs = docs.configs(phase)
        except UnknownPhase as error:
            raise HTTPException(status_code=422, detail=str(error)) from None
        which = phase or docs.phase
        return {"message": f"deployment configs of the {which} phase", "configs": configs}

    @app.post(
        f"{PREFIX}/transition/{{phase}}",
        response_model=TransitionResponse,
        responses={
            **AUTH_RESPONSES,
            202: {"model": TransitionResponse, "description": "Execution started"},
            403: {"model": Message, "description": "The token lacks the operator role"},
            409: {"model": Message, "description": "A transition is already running"},
            422: {"model": Message, "description": "Unknown phase, or transition refused"},
            503: {"model": Message, "description": "Transitions unavailable"},
        },
    )
    def transition(
        phase: PhaseName,
        who: Operator,
        service: Service,
        settings: Settings,
        response: Response,
        request: TransitionRequest | None = None,
    ) -> dict[str, Any]:
        """Prepare the transition of the served stack to ``phase`` (the default), or execute
        it with ``{"execute": true}``: 202 at once, progress in ``GET /transitions``
        (``"wait": true`` answers when it ends)."""
        try:
            target = check_phase(phase)
        except UnknownPhase as error:
            raise HTTPException(status_code=422, detail=str(error)) from None
        body = request or TransitionRequest()
        common: dict[str, Any] = {
            "from_stack": settings.from_stack,
            "force": body.force,
            "local": settings.local,
            "state_root": settings.state_root,
        }
        busy, refused = service.busy_error, service.refused_error
        try:
            if not body.execute:
                result = result_dict(service.prepare(target, **common))
                verb = "prepared"
            else:
                if background.running() or service.is_running(target, settings.state_root):
                    raise HTTPException(
                        status_code=409, detail=f"a transition to {target} is already running"
                    )
                log.info(
                    "%s starts the transition %s -> %s", who.subject, common["from_stack"], target
                )

                def run() -> Any:
                    return service.execute(target, **common, retire=body.retire)

                if body.wait:
                    result = result_dict(run())
                    verb = "executed"
                else:
                    name = f"{settings.from_stack}->{target}"
                    if not background.start(name, run):
                        raise HTTPException(
                            status_code=409, detail="a transition is already running"
                        )
                    response.status_code = 202
                    return {
                        "message": f"transition {settings.from_stack} → {target} started",
                        "result": {
                            "success": True,
                            "message": f"started by {who.subject}; follow GET "
                            f"{PREFIX}/transitions?stack={target}",
                            "actions": [],
                            "nextSteps": [f"GET {PREFIX}/transitions?stack={target}"],
                        },
                    }
        except HTTPException:
            raise
        except Exception as error:
            if isinstance(error, busy):
                raise HTTPException(status_code=409, detail=str(error)) from None
            if isinstance(error, refused):
                raise HTTPException(status_code=422, detail=str(error)) from None
            raise
        return {
            "message": f"transition {settings.from_stack} → {target} {verb}",
            "result": result,
        }

    @app.get(
        f"{PREFIX}/transitions",
        response_model=TransitionsResponse,
        responses={
            **AUTH_RESPONSES,
            422: {"model": Message, "description": "Unknown stack"},
            503: {"model": Message, "description": "Transitions unavailable"},
        },
    )
    def transitions_log(
        _: Reader,
        service: Service,
        settings: Settings,
        stack: Annotated[
            PhaseName | None,
            Query(
                description="The target stack whose log to read (default: into and out of "
                "the served stack)"
            ),
        ] = None,
    ) -> dict[str, Any]:
        """The transition log's events, oldest first (a transition's progress)."""
        try:
            events = _transition_events(service, settings, stack)
        except UnknownPhase as error:
            raise HTTPException(status_code=422, detail=str(error)) from None
        return {
            "message": f"{len(events)} transition event(s)",
            "transitions": events,
            "running": background.running(),
        }

    # ----------------------------------------------------------------------- the page

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form() -> HTMLResponse:
        return _page(page.login_page(None))

    @app.post("/login", include_in_schema=False)
    def login(request: Request, token: Annotated[str, Form(max_length=8192)]) -> Response:
        verifier: Verifier = request.app.state.verifier
        try:
            who = verifier.verify(token.strip())
        except TokenRejected as error:
            return _page(page.login_page(str(error)), status_code=401)
        response = RedirectResponse("/", status_code=303)
        max_age = int(min(COOKIE_MAX_AGE, max(1.0, who.expires_at - time.time())))
        response.set_cookie(
            COOKIE,
            token.strip(),
            max_age=max_age,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        log.info("%s logged in to the status page", who.subject)
        return response

    @app.post("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request, settings: Settings, docs: Docs, service: Service) -> Response:
        try:
            who = _cookie_principal(request)
        except TokenRejected:
            return RedirectResponse("/login", status_code=303)
        live = _live(docs, service, settings, background.running())
        return _page(
            page.status_page(docs.stack, docs.phase, who.subject, settings.refresh_seconds, live)
        )

    @app.get("/partials/live", response_class=HTMLResponse, include_in_schema=False)
    def live(request: Request, settings: Settings, docs: Docs, service: Service) -> Response:
        try:
            _cookie_principal(request)
        except TokenRejected as error:
            raise _unauthorized(str(error)) from None
        return _page(_live(docs, service, settings, background.running()))

    return app


def _measured(docs: Documents) -> Any:
    try:
        return docs.measured()
    except Unavailable as error:
        raise HTTPException(status_code=503, detail=f"cannot measure now: {error}") from None


def _transition_events(
    service: TransitionService, settings: ServerSettings, stack: str | None
) -> list[dict[str, Any]]:
    if stack is not None:
        stacks = [check_phase(stack)]
    else:
        # Transitions are logged under their target stack: every phase's log, into the served
        # stack and out of it.
        stacks = list(dict.fromkeys([settings.from_stack, *PHASES]))
    events: list[dict[str, Any]] = []
    for name in stacks:
        events += service.transitions(name, state_root=settings.state_root)
    return sorted(events, key=_event_time)


def _event_time(event: dict[str, Any]) -> float:
    try:
        return float(event.get("at") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def _cookie_principal(request: Request) -> Principal:
    token = request.cookies.get(COOKIE)
    if not token:
        raise TokenRejected("not logged in")
    verifier: Verifier = request.app.state.verifier
    return verifier.verify(token)


def _live(
    docs: Documents, service: TransitionService, settings: ServerSettings, running: bool
) -> str:
    try:
        m = docs.measured()
    except Unavailable as error:
        return page.unavailable_fragment(str(error))
    try:
        events: list[dict[str, Any]] | str = _transition_events(service, settings, None)
    except (OSError, ValueError) as error:
        events = str(error)
    return page.live_fragment(m.status, m.history, events, running)


def _page(html: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        html, status_code=status_code, headers={"Content-Security-Policy": PAGE_CSP}
    )

"""Stand-ins for the scaling API's tests: documents built by the checker's own functions
from samples the test makes, a transition service that records its calls, and tokens."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from scaling.advisor.status import assess
from scaling.api.auth import AuthSettings, Verifier
from scaling.api.documents import Measured, check_phase, configs_document, documents_of
from scaling.bundle import render_bundle
from scaling.metrics.model import Reading, Sample
from scaling.model import PhaseSpec
from scaling.stackconfig import load_stack_file
from scaling.stackfiles import stack_path

SECRET = "s" * 16 + "-test-secret-of-32+bytes"
AUDIENCE = "sikka-scaling"


def spec_of(stack: str) -> PhaseSpec:
    return load_stack_file(stack_path(stack))


def sample(spec: PhaseSpec, at: float, db: float, *, redis_mb: float = 20.0) -> Sample:
    """One sample of a launch-shaped phase: ``db`` PostgreSQL connections."""
    limit = spec.postgres.max_connections
    return Sample(
        at,
        "direct",
        (
            Reading("postgres.connections", "postgres", "postgres-0", db, limit, "connections"),
            Reading(
                "redis.memory",
                "redis",
                "redis-0",
                redis_mb * 2**20,
                spec.redis.memory_per_node_mb * 2**20,
                "bytes",
            ),
            Reading(
                "gateway.connections",
                "gateway",
                "gateway-0",
                3,
                spec.gateway.connections_per_replica,
                "connections",
            ),
            Reading("nginx.connections", "nginx", "nginx-0", 4, 2048, "connections"),
        ),
    )


@dataclass
class _Observation:
    notes: tuple[str, ...] = ()


class FakeDocuments:
    """The served phase's documents from samples the test sets (``db`` connections over
    time), built by the same functions as the real ones."""

    def __init__(self, stack: str = "launch", db: list[float] | None = None) -> None:
        self.spec = spec_of(stack)
        self.stack = stack
        self.phase = self.spec.phase.value
        self.db = db or [4.0, 5.0, 5.0]
        self.unavailable: str | None = None
        self.calls = 0

    def measured(self) -> Measured:
        from scaling.api.documents import Unavailable

        self.calls += 1
        if self.unavailable:
            raise Unavailable(self.unavailable)
        now = time.time()
        history = [
            sample(self.spec, now - 5 * (len(self.db) - i - 1), v) for i, v in enumerate(self.db)
        ]
        a = assess(history, self.spec, stack=self.stack, window=15, now=now)
        status, summary, hist = documents_of(a, _Observation(("a note",)))
        return Measured(status, summary, hist, now)

    def configs(self, phase: str | None) -> dict[str, Any]:
        if phase is not None:
            check_phase(phase)
        spec = self.spec if phase is None else spec_of(phase)
        return configs_document(render_bundle(spec))


class Busy(RuntimeError):
    pass


class Refused(ValueError):
    pass


@dataclass
class Result:
    success: bool
    message: str
    actions: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "message": self.message,
            "actions": self.actions,
            "nextSteps": self.next_steps,
        }


class FakeService:
    """Records every call; ``running`` says is_running; ``refuse`` / ``busy`` make the
    next prepare or execute raise; ``hold`` keeps execute blocked until set."""

    busy_error = Busy
    refused_error = Refused

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.running = False
        self.refuse: str | None = None
        self.busy: str | None = None
        self.hold = threading.Event()
        self.hold.set()
        self.events: dict[str, list[dict[str, Any]]] = {}

    def _raise(self) -> None:
        if self.refuse:
            raise Refused(self.refuse)
        if self.busy:
            raise Busy(self.busy)

    def prepare(self, to_stack: str, **kwargs: Any) -> Result:
        self.calls.append(("prepare", to_stack, kwargs))
        self._raise()
        return Result(True, f"plan to {to_stack}", ["validate-target", "start-target"], ["run"])

    def execute(self, to_stack: str, **kwargs: Any) -> Result:
        self.calls.append(("execute", to_stack, kwargs))
        self._raise()
        self.hold.wait(10)
        return Result(True, f"moved to {to_stack}", ["promote-target"], [])

    def transitions(self, stack: str, *, state_root: Path | None) -> list[dict[str, Any]]:
        self.calls.append(("transitions", stack, {"state_root": state_root}))
        return list(self.events.get(stack, []))

    def is_running(self, to_stack: str, state_root: Path | None = None) -> bool:
        return self.running


def hs_verifier(**overrides: Any) -> Verifier:
    settings = {
        "secret": SECRET.encode(),
        "jwks_url": None,
        "audience": AUDIENCE,
        "issuer": None,
        "leeway": 5.0,
        **overrides,
    }
    return Verifier(AuthSettings(**settings))


def token(
    *,
    roles: list[str] | None = None,
    key: Any = SECRET,
    alg: str = "HS256",
    ttl: float = 600,
    nbf: float | None = None,
    aud: str | None = AUDIENCE,
    iss: str | None = None,
    sub: str | None = "alice",
    headers: dict[str, Any] | None = None,
    exp: bool = True,
) -> str:
    now = time.time()
    claims: dict[str, Any] = {"iat": int(now), "roles": roles if roles is not None else ["viewer"]}
    if exp:
        claims["exp"] = int(now + ttl)
    if sub is not None:
        claims["sub"] = sub
    if aud is not None:
        claims["aud"] = aud
    if iss is not None:
        claims["iss"] = iss
    if nbf is not None:
        claims["nbf"] = int(nbf)
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


def none_token(**claims: Any) -> str:
    """An unsigned token (``alg: none``), made by hand as an attacker would."""
    import base64
    import json

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = {"sub": "mallory", "roles": ["operator"], "aud": AUDIENCE, "exp": now + 600, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."

"""What the API serves, taken from the checker and the renderers (no judgement of its own).

:class:`CheckerDocuments` measures the served phase with the checker's own function
(:func:`scaling.metrics.cli.measure`, what `sikka-scaling status` runs), builds the status,
summary and history documents with :mod:`scaling.advisor.status`, and renders deployment
configs with :func:`scaling.bundle.render_bundle`. Requests that arrive while a
measurement runs share it: a measurement started after a request arrived answers it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

PHASES = ("launch", "growth", "scale")

# render_bundle's file names → the seed's configs keys (None: the platform renders none).
CONFIG_FILES = {
    "dockerCompose": "docker-compose.yml",
    "environmentVariables": ".env",
    "nginxConfig": "nginx.conf",
    "kubernetesManifests": "manifests.yaml",
    "prometheusConfig": "prometheus.yml",
    "alertRules": "alerts.yml",
}


class Unavailable(Exception):
    """The phase could not be measured (no local run, unreachable Prometheus, ...): 503."""


class Misconfigured(Unavailable):
    """The checker's options themselves are wrong (two sources, a bad --set): the server
    refuses to start on it."""


class UnknownPhase(ValueError):
    """A phase name that is none of :data:`PHASES`: 422."""

    def __init__(self, phase: str) -> None:
        super().__init__(f"unknown phase {phase[:40]!r}: one of {', '.join(PHASES)}")


def check_phase(phase: str) -> str:
    if phase not in PHASES:
        raise UnknownPhase(phase)
    return phase


@dataclass(frozen=True)
class Measured:
    """One measurement's documents."""

    status: dict[str, Any]
    summary: dict[str, Any]
    history: dict[str, Any]
    taken_at: float


class Documents(Protocol):
    stack: str
    phase: str

    def measured(self) -> Measured: ...

    def configs(self, phase: str | None) -> dict[str, Any]: ...


def configs_document(files: dict[str, str]) -> dict[str, Any]:
    """The seed's ``configs`` from render_bundle's files; every other rendered file (the
    configs the containers mount) under ``otherFiles``."""
    named = {key: files.get(name) for key, name in CONFIG_FILES.items()}
    used = set(CONFIG_FILES.values())
    return {**named, "otherFiles": {n: c for n, c in files.items() if n not in used}}


def documents_of(assessment: Any, observation: Any) -> tuple[dict, dict, dict]:
    """(status, summary, history) documents of one measurement, as the CLI builds them."""
    from scaling.advisor.status import history_document, status_document, summary_document

    status = status_document(assessment)
    status["notes"] = list(observation.notes)
    return status, summary_document(assessment), history_document(assessment)


@dataclass
class CheckOptions:
    """The checker's options, as `sikka-scaling status` takes them."""

    stack: str
    local: bool = False
    endpoints_file: Path | None = None
    prometheus: str | None = None
    pulumi_stack: str | None = None
    window: str | None = None
    history_file: Path | None = None
    no_history: bool = False
    state_dir: Path | None = None
    overrides: list[str] = field(default_factory=list)
    no_host: bool = False


class CheckerDocuments:
    """The served phase, measured by the checker on demand."""

    def __init__(self, options: CheckOptions) -> None:
        from scaling.local.runner import load_spec, parse_set_options
        from scaling.stackfiles import stack_name, stack_path

        self.options = options
        path = stack_path(options.stack)
        self.spec = load_spec(path, parse_set_options(options.overrides))
        self.stack = self.spec.stack or stack_name(str(path))
        self.phase = self.spec.phase.value
        self._lock = threading.Lock()
        self._last: Measured | None = None
        self._last_started = 0.0

    def measured(self) -> Measured:
        asked = time.monotonic()
        with self._lock:
            if self._last is not None and self._last_started >= asked:
                return self._last  # measured after this request arrived
            started = time.monotonic()
            assessment, observation = self._measure()
            status, summary, history = documents_of(assessment, observation)
            self._last = Measured(status, summary, history, time.time())
            self._last_started = started
            return self._last

    def _measure(self) -> tuple[Any, Any]:
        import typer

        from scaling.metrics.cli import CannotRun, measure

        o = self.options
        try:
            return measure(
                o.stack,
                local=o.local,
                endpoints_file=o.endpoints_file,
                prometheus=o.prometheus,
                pulumi_stack=o.pulumi_stack,
                window=o.window,
                history_file=o.history_file,
                no_history=o.no_history,
                state_dir=o.state_dir,
                overrides=o.overrides,
                no_host=o.no_host,
            )
        except CannotRun as error:
            raise Unavailable(error.message) from None
        except typer.BadParameter as error:
            raise Misconfigured(error.format_message()) from None

    def configs(self, phase: str | None) -> dict[str, Any]:
        from scaling.bundle import render_bundle
        from scaling.stackconfig import load_stack_file
        from scaling.stackfiles import stack_path

        if phase is not None:
            check_phase(phase)
        if phase is None or phase == self.phase:
            spec = self.spec  # the served stack, with its --set values
        else:
            spec = load_stack_file(stack_path(phase))
        return configs_document(render_bundle(spec))

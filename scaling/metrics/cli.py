"""`sikka-scaling check <stack>`: measure a live phase and judge it (and, from the same
measurements, `status` and `summary`). Registered on the top-level app by scaling/cli.py.

Exit codes: :class:`scaling.advisor.verdict.Verdict` (0, 3-6), :data:`CANNOT_RUN` (1), usage
errors (2).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

StackArg = Annotated[str, typer.Argument(help="Stack name (launch, growth, scale) or stack file")]
LocalOpt = Annotated[
    bool, typer.Option("--local", help="Probe the running `local up` of the stack (default)")
]
EndpointsOpt = Annotated[
    Path | None,
    typer.Option("--endpoints", help="Probe the parts a `local up --json` document lists"),
]
PrometheusOpt = Annotated[
    str | None,
    typer.Option("--prometheus", help="Query this Prometheus (instant and range queries)"),
]
PulumiStackOpt = Annotated[
    str | None,
    typer.Option(
        "--pulumi-stack",
        help="Probe the parts a deployed Pulumi stack's outputs name (`pulumi stack output`; "
        "the default when no local phase runs and the Pulumi CLI is on PATH)",
    ),
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="The local run's state folder (default as `local up`)"),
]
WindowOpt = Annotated[
    str | None,
    typer.Option(
        "--window",
        help="How long a breach must last to be a reason to act, e.g. 600, 90s, 10m "
        "(default: the alert rules' `for:`)",
    ),
]
HistoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--history",
        help="Sample history of the direct check (default: check-history.jsonl in the "
        "stack's state folder)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document")]
NoHistoryOpt = Annotated[
    bool, typer.Option("--no-history", help="Neither read nor append the history")
]
NoHostOpt = Annotated[bool, typer.Option("--no-host", help="Do not measure this machine (psutil)")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="A stack value the phase was started with (`local up --set`), e.g. "
        "gateway.connectionsPerReplica=10 (repeatable)",
    ),
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def parse_duration(text: str, option: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(
            f"expected seconds or 30s / 10m / 1h, got {text!r}", param_hint=option
        )
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"s": 1, "m": 60, "h": 3600}[unit]


# The check could not run (bad stack file, no local phase, unreadable endpoints or history):
# beside the verdicts of scaling.advisor.verdict.Verdict (0, 3-6) and usage errors (2).
CANNOT_RUN = 1


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code=CANNOT_RUN)


def _resolve(
    stack: str,
    *,
    local: bool,
    endpoints_file: Path | None,
    prometheus: str | None,
    state_dir: Path | None,
    parts: dict[str, Any],
    overrides: list[str],
    pulumi_stack: str | None = None,
) -> tuple[Any, Any, Path]:
    """(spec, endpoints or None for Prometheus, the stack's state folder)."""
    from scaling.issues import ConfigError
    from scaling.local.runner import load_spec, parse_set_options
    from scaling.local.state import state_dir_for
    from scaling.metrics import endpoints as ep
    from scaling.stackfiles import StackFileNotFound, stack_name, stack_path

    chosen = [
        name
        for name, on in (
            ("--local", local),
            ("--endpoints", endpoints_file),
            ("--prometheus", prometheus),
            ("--pulumi-stack", pulumi_stack),
        )
        if on
    ]
    if len(chosen) > 1:
        raise typer.BadParameter(
            f"{' and '.join(chosen)}: give one source of endpoints", param_hint=chosen[1]
        )
    try:
        path = stack_path(stack)
        name = stack_name(str(path))
    except StackFileNotFound as error:
        raise typer.BadParameter(str(error), param_hint="STACK") from None
    try:
        spec = load_spec(path, parse_set_options(overrides))
    except (ConfigError, ValueError) as error:
        raise _fail(str(error)) from None
    folder = state_dir_for(name, state_dir)
    if prometheus:
        return spec, None, folder
    given = {k: v for k, v in parts.items() if v is not None}
    try:
        if endpoints_file is not None:
            base = ep.from_document(endpoints_file, spec)
        elif pulumi_stack is not None:
            base = _from_stack_outputs(pulumi_stack, path, spec)
        elif local or not set(given) - {"host"}:
            base = _local_or_stack_outputs(local, name, path, folder, spec)
        else:
            base = ep.Endpoints(stack=name, host=True)
        return spec, ep.with_overrides(base, **given), folder
    except ep.EndpointsError as error:
        from scaling.metrics.check import pulumi_note

        said = pulumi_note() if pulumi_stack is None else ""
        raise _fail(f"check {name}: {error}" + (f"; {said}" if said else "")) from None


def _from_stack_outputs(pulumi_stack: str, stack_file: Path, spec: Any) -> Any:
    """The Endpoints a deployed stack's outputs name, read with the Pulumi CLI in the
    project the stack file belongs to."""
    from scaling.metrics import endpoints as ep
    from scaling.metrics.stack_outputs import read_outputs
    from scaling.stackfiles import PROJECT_DIR

    folder = stack_file.resolve().parent
    project = folder if (folder / "Pulumi.yaml").is_file() else PROJECT_DIR
    outputs = read_outputs(pulumi_stack, project)
    found = ep.from_stack_outputs(outputs, spec, pulumi_stack)
    password = os.environ.get("PGBOUNCER_ADMIN_PASSWORD")
    if not password:
        return found
    notes = tuple(n for n in found.notes if n != ep.POOLER_PASSWORD_NOTE)
    return ep.with_overrides(found, pooler_password=password, notes=notes)


def _local_or_stack_outputs(local: bool, name: str, path: Path, folder: Path, spec: Any) -> Any:
    """No source given: the running `local up`; when none runs and the Pulumi CLI is on
    PATH, the outputs of the Pulumi stack of the same name."""
    from scaling.metrics import endpoints as ep
    from scaling.metrics.stack_outputs import pulumi_cli

    try:
        return ep.from_local_state(folder, spec)
    except ep.EndpointsError as error:
        if local or pulumi_cli() is None:
            raise
        try:
            return _from_stack_outputs(name, path, spec)
        except ep.EndpointsError as outputs_error:
            raise ep.EndpointsError(f"{error}; {outputs_error}") from None


def _part_flags(
    postgres: list[str] | None,
    pgbouncer: list[str] | None,
    redis: list[str] | None,
    gateway: list[str] | None,
    nginx: list[str] | None,
    no_host: bool,
) -> dict[str, Any]:
    from scaling.metrics.endpoints import EndpointsError, parse_hostport

    def hostports(values: list[str] | None, option: str) -> tuple[Any, ...] | None:
        if not values:
            return None
        try:
            return tuple(parse_hostport(v, option) for v in values)
        except EndpointsError as error:
            raise typer.BadParameter(str(error), param_hint=option) from None

    found: dict[str, Any] = {
        "postgres": hostports(postgres, "--postgres"),
        "poolers": hostports(pgbouncer, "--pgbouncer"),
        "redis": hostports(redis, "--redis"),
        "gateways": tuple((url,) for url in gateway) if gateway else None,
        "nginx": tuple(nginx) if nginx else None,
        "host": False if no_host else None,
    }
    # Passwords for parts given by flag: the clients' usual environment variables.
    if postgres and os.environ.get("PGPASSWORD"):
        found["postgres_password"] = os.environ["PGPASSWORD"]
    if pgbouncer and os.environ.get("PGBOUNCER_ADMIN_PASSWORD"):
        found["pooler_password"] = os.environ["PGBOUNCER_ADMIN_PASSWORD"]
    if redis and os.environ.get("REDISCLI_AUTH"):
        found["redis_password"] = os.environ["REDISCLI_AUTH"]
    return found


def check(
    stack: StackArg,
    local: LocalOpt = False,
    endpoints_file: EndpointsOpt = None,
    prometheus: PrometheusOpt = None,
    pulumi_stack: PulumiStackOpt = None,
    window: WindowOpt = None,
    watch: Annotated[
        float | None,
        typer.Option("--watch", help="Keep sampling every SECONDS (Ctrl-C stops)", min=1),
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", help="With --watch: stop after N samples", min=1)
    ] = None,
    history_file: HistoryOpt = None,
    no_history: NoHistoryOpt = False,
    step: Annotated[
        str | None,
        typer.Option("--step", help="Prometheus range step (default: window / 20, ≥ 15s)"),
    ] = None,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    overrides: SetOpt = None,
    postgres: Annotated[
        list[str] | None,
        typer.Option("--postgres", help="A PostgreSQL member HOST:PORT (repeatable; $PGPASSWORD)"),
    ] = None,
    pgbouncer: Annotated[
        list[str] | None,
        typer.Option(
            "--pgbouncer", help="A PgBouncer HOST:PORT (repeatable; $PGBOUNCER_ADMIN_PASSWORD)"
        ),
    ] = None,
    redis: Annotated[
        list[str] | None,
        typer.Option("--redis", help="A Redis node HOST:PORT (repeatable; $REDISCLI_AUTH)"),
    ] = None,
    gateway: Annotated[
        list[str] | None,
        typer.Option("--gateway-metrics", help="A gateway's /metrics URL (repeatable)"),
    ] = None,
    nginx: Annotated[
        list[str] | None,
        typer.Option("--nginx-status", help="An Nginx stub_status URL (repeatable)"),
    ] = None,
    no_host: NoHostOpt = False,
) -> None:
    """Measure a live phase, judge every reading against the phase's thresholds, and say
    whether a breach sustained over the window calls for promotion or optimisation.

    Exit codes: 0 fine, 3 warning, 4 promotion/optimisation recommended (a breach sustained
    over the window), 5 critical now, 6 a part unreachable (the highest that applies);
    1 the check could not run, 2 usage error."""
    from scaling.metrics.report import report

    if prometheus and (watch or history_file):
        raise typer.BadParameter(
            "the Prometheus check keeps no history: Prometheus is the history",
            param_hint="--watch/--history",
        )
    session = _session(
        stack,
        local=local,
        endpoints_file=endpoints_file,
        prometheus=prometheus,
        pulumi_stack=pulumi_stack,
        state_dir=state_dir,
        overrides=overrides,
        window=window,
        step=step,
        history_file=history_file,
        no_history=no_history,
        parts=_part_flags(postgres, pgbouncer, redis, gateway, nginx, no_host),
    )
    taken = 0
    code = 0
    while True:
        observation = session.observe()
        document, text = report(stack, session.spec, observation, session.window)
        code = int(document["exitCode"])
        typer.echo(json.dumps(document, indent=2) if as_json else text)
        taken += 1
        if watch is None or (count is not None and taken >= count):
            break
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            break
    raise typer.Exit(code=code)


@dataclass
class _Session:
    """One phase to measure: its spec, where its parts are, how to observe it."""

    stack: str
    spec: Any
    endpoints: Any
    prometheus: str | None
    window: float
    step: float
    history: Path | None

    def observe(self) -> Any:
        from scaling.metrics import history
        from scaling.metrics.check import observe_direct, observe_prometheus

        try:
            if self.prometheus:
                return observe_prometheus(self.prometheus, self.spec, self.window, self.step)
            return observe_direct(self.endpoints, self.spec, self.window, self.history)
        except history.HistoryError as error:
            raise _fail(f"check {self.stack}: {error}") from None


def _session(
    stack: str,
    *,
    local: bool,
    endpoints_file: Path | None,
    prometheus: str | None,
    state_dir: Path | None,
    overrides: list[str] | None,
    window: str | None,
    step: str | None,
    history_file: Path | None,
    no_history: bool,
    parts: dict[str, Any],
    pulumi_stack: str | None = None,
) -> _Session:
    from scaling.advisor.levels import SUSTAINED_SECONDS
    from scaling.metrics import history

    seconds = parse_duration(window, "--window") if window else float(SUSTAINED_SECONDS)
    if seconds <= 0:
        raise typer.BadParameter("must be more than 0 seconds", param_hint="--window")
    spec, endpoints, folder = _resolve(
        stack,
        local=local,
        endpoints_file=endpoints_file,
        prometheus=prometheus,
        state_dir=state_dir,
        parts=parts,
        overrides=overrides or [],
        pulumi_stack=pulumi_stack,
    )
    return _Session(
        stack=spec.stack or stack,
        spec=spec,
        endpoints=endpoints,
        prometheus=prometheus,
        window=seconds,
        step=parse_duration(step, "--step") if step else max(15.0, seconds / 20),
        history=None if no_history else (history_file or history.default_path(folder)),
    )


def _documents(
    stack: str,
    local: bool,
    endpoints_file: Path | None,
    prometheus: str | None,
    window: str | None,
    history_file: Path | None,
    no_history: bool,
    state_dir: Path | None,
    overrides: list[str] | None,
    no_host: bool,
    pulumi_stack: str | None = None,
) -> tuple[Any, Any]:
    """(assessment, observation) of one measurement with the readiness checks."""
    from scaling.metrics.readiness import readiness
    from scaling.metrics.report import assessment

    session = _session(
        stack,
        local=local,
        endpoints_file=endpoints_file,
        prometheus=prometheus,
        state_dir=state_dir,
        overrides=overrides,
        window=window,
        step=None,
        history_file=history_file,
        no_history=no_history,
        parts={"host": False} if no_host else {},
        pulumi_stack=pulumi_stack,
    )
    observation = session.observe()
    checks = readiness(session.endpoints, session.spec, observation.latest, prometheus)
    return assessment(stack, session.spec, observation, session.window, checks), observation


def _print_document(document: dict[str, Any], as_json: bool) -> None:
    import yaml

    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        typer.echo(yaml.safe_dump(document, sort_keys=False, width=100, allow_unicode=True))


def status(
    stack: StackArg,
    local: LocalOpt = False,
    endpoints_file: EndpointsOpt = None,
    prometheus: PrometheusOpt = None,
    pulumi_stack: PulumiStackOpt = None,
    window: WindowOpt = None,
    history_file: HistoryOpt = None,
    no_history: NoHistoryOpt = False,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    overrides: SetOpt = None,
    no_host: NoHostOpt = False,
) -> None:
    """The phase's status document, measured now: current phase and the next, capacity
    and utilisation, progress from readiness checks run against the live system,
    recommendations, configured vs measured infrastructure and the time to the next phase
    from the measured trend. Exits with the check's verdict code."""
    from scaling.advisor.status import status_document

    last = _last_transition(stack, state_dir)
    try:
        a, observation = _documents(
            stack, local, endpoints_file, prometheus, window, history_file, no_history,
            state_dir, overrides, no_host, pulumi_stack,
        )  # fmt: skip
    except typer.Exit:
        if last is not None:  # the phase cannot be measured (retired?): say where it went
            typer.echo(f"last transition: {_transition_line(last)}", err=True)
        raise
    document = status_document(a, last)
    document["notes"] = list(observation.notes)
    _print_document(document, as_json)
    raise typer.Exit(code=a.outcome.exit_code)


def _last_transition(stack: str, state_dir: Path | None) -> dict[str, Any] | None:
    """The latest transition into or out of the stack (its transition logs), or None."""
    from scaling.stackfiles import StackFileNotFound, stack_name
    from scaling.transition.service import last_transition

    try:
        return last_transition(stack_name(stack), state_dir=state_dir)
    except (StackFileNotFound, OSError, ValueError):
        return None


def _transition_line(last: dict[str, Any]) -> str:
    failed = f" at {last['failedStep']}" if last.get("failedStep") else ""
    return (
        f"{last['source']} → {last['target']} {last['outcome']}{failed} "
        f"(transition {last['transition']}, started {last['startedAt']}; log {last['log']})"
    )


def summary(
    stack: StackArg,
    local: LocalOpt = False,
    endpoints_file: EndpointsOpt = None,
    prometheus: PrometheusOpt = None,
    pulumi_stack: PulumiStackOpt = None,
    window: WindowOpt = None,
    history_file: HistoryOpt = None,
    no_history: NoHistoryOpt = False,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    overrides: SetOpt = None,
    no_host: NoHostOpt = False,
) -> None:
    """The short form of `status`: phase, verdict, utilisation, progress, time to the next
    phase and the immediate recommendations. Exits with the check's verdict code."""
    from scaling.advisor.status import summary_document

    a, _ = _documents(
        stack, local, endpoints_file, prometheus, window, history_file, no_history,
        state_dir, overrides, no_host, pulumi_stack,
    )  # fmt: skip
    _print_document(summary_document(a), as_json)
    raise typer.Exit(code=a.outcome.exit_code)

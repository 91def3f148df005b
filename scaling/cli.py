"""`sikka-scaling`: validate and render stacks (and, later, run them locally)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from scaling import stackfiles
from scaling.api.cli import api_token as api_token_command
from scaling.api.cli import serve as serve_command
from scaling.bundle import render_bundle
from scaling.issues import ConfigError, one_line
from scaling.local.cli import local_app
from scaling.metrics.cli import check as check_command
from scaling.metrics.cli import status as status_command
from scaling.metrics.cli import summary as summary_command
from scaling.model import PhaseSpec, PlatformKind
from scaling.stackconfig import load_stack_file
from scaling.transition.cli import transition as transition_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

PROJECT_DIR = Path(__file__).resolve().parent.parent

StackArg = Annotated[str, typer.Argument(help="Stack name (launch, growth, scale) or stack file")]


def stack_path(stack: str) -> Path:
    try:
        return stackfiles.stack_path(stack)
    except stackfiles.StackFileNotFound as error:
        raise typer.BadParameter(str(error), param_hint="STACK") from None


def load(stack: str) -> PhaseSpec:
    path = stack_path(stack)
    try:
        return load_stack_file(path)
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None


@app.command()
def validate(stack: StackArg) -> None:
    """Validate a stack file: every problem at once, each with its key; exit 1 if any."""
    spec = load(stack)
    typer.echo(
        f"{stack_path(stack).name}: ok ({spec.phase.value} phase on {spec.platform.value}: "
        f"postgres {spec.postgres.mode}, redis {spec.redis.mode}, "
        f"{spec.gateway.replicas} gateway(s))"
    )
    if spec.gateway.auth.mode == "disabled":
        # Accepted because the stack file says so; said out loud every time it is checked.
        typer.echo(
            "note: sikka:gateway.auth.mode is 'disabled': any client may subscribe and publish"
        )


@app.command("scram-verifier")
def scram_verifier_command() -> None:
    """Print the SCRAM-SHA-256 verifier of the password read on stdin (a new random salt),
    for docker compose: DATABASE_PASSWORD_SCRAM, PGBOUNCER_ADMIN_PASSWORD_SCRAM and
    MONITORING_PASSWORD_SCRAM are the verifiers of DATABASE_PASSWORD,
    PGBOUNCER_ADMIN_PASSWORD and MONITORING_PASSWORD."""
    from scaling.render.scram import SALT_BYTES, scram_verifier

    password = sys.stdin.read().removesuffix("\n")
    if not password:
        typer.echo("no password on stdin", err=True)
        raise typer.Exit(code=1)
    typer.echo(scram_verifier(password, os.urandom(SALT_BYTES)))


@app.command()
def render(
    stack: StackArg,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the configs into")],
) -> None:
    """Write the phase's deployment configs (no Pulumi needed)."""
    spec = load(stack)
    if out.exists() and not out.is_dir():
        _fail(f"render: --out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        project = Path(os.path.relpath(PROJECT_DIR, out.resolve())).as_posix()
        source = _source_transition(spec, stack)
        if spec.promotion is not None and spec.platform == PlatformKind.DOCKER and not source:
            _fail(
                f"render: Pulumi.{spec.stack}.yaml: sikka:promoteFrom: the source's hosts and "
                f"network come from its stack file, Pulumi.{spec.promotion.source_stack}.yaml, "
                "which must be beside this one"
            )
        try:
            bundle = render_bundle(spec, project, source)
        except ValueError as error:  # the source's file lacks what the target follows
            _fail(f"render: {error}")
        for name, content in bundle.items():
            (out / name).write_text(content)
            typer.echo(f"wrote {out / name}")
    except OSError as error:
        where = error.filename or out
        _fail(f"render: --out {out}: cannot write {where}: {error.strerror or error}")


def _fail(message: str) -> None:
    typer.echo(one_line(message, 400), err=True)
    raise typer.Exit(code=1)


def _source_transition(spec: PhaseSpec, stack: str) -> dict[str, Any] | None:
    """A Docker transition's target: its source's ``transition`` output, from the source's
    stack file beside this one (None when there is none: rendering then says so)."""
    from scaling.exports import transition_source
    from scaling.topology import build_topology

    if spec.promotion is None or spec.platform != PlatformKind.DOCKER:
        return None
    source = stack_path(stack).parent / f"Pulumi.{spec.promotion.source_stack}.yaml"
    if not source.is_file():
        return None
    return transition_source(build_topology(load(str(source))))


def _source_outputs(spec: PhaseSpec, stack: str) -> dict[str, Any]:
    """A transition's target (sikka:promoteFrom) reads its source's outputs: offline, they
    are those of the source's stack file beside this one, evaluated the same way."""
    from components.offline_preview import run_stack
    from scaling.promotion import full_reference

    if spec.promotion is None:
        return {}
    source = stack_path(stack).parent / f"Pulumi.{spec.promotion.source_stack}.yaml"
    if not source.is_file():
        return {}
    outputs = run_stack(spec.promotion.source_stack, stack_file=source).exports
    return {full_reference(spec.promotion.source, "organization", "sikka-scaling"): outputs}


@app.command()
def preview(
    stack: StackArg,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document")] = False,
) -> None:
    """Evaluate the Pulumi program for a stack under Pulumi's mock engine (no CLI, no cloud)
    and list every resource it would register."""
    import json

    spec = load(stack)  # the same validation messages as `validate`
    from components.offline_preview import run_stack

    try:
        # The program reads the very file `validate` and `render` read, not the project's.
        run = run_stack(
            spec.stack, stack_file=stack_path(stack), references=_source_outputs(spec, stack)
        )
    except ConfigError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    rows = [
        {"type": r.type, "name": r.name, "secret_inputs": sorted(r.secret_paths())}
        for r in run.resources
    ]
    exports = sorted(run.exports)
    if as_json:
        document = {
            "stack": stack,
            "resources": rows,
            "exports": exports,
            "secret_exports": sorted(run.secret_exports),
        }
        typer.echo(json.dumps(document, indent=2))
        return
    for row in rows:
        secret = f"  (secret: {', '.join(row['secret_inputs'])})" if row["secret_inputs"] else ""
        typer.echo(f"{row['type']:<55} {row['name']}{secret}")
    marked = [f"{name} (secret)" if name in run.secret_exports else name for name in exports]
    typer.echo(f"{len(rows)} resources; exports: {', '.join(marked)}")


@app.command()
def token(
    stack: Annotated[str, typer.Option("--stack", help="Stack name or stack file")],
    sub: Annotated[str, typer.Option("--sub", help="Who the token is for")],
    role: Annotated[str, typer.Option("--role", help="rider, driver or ops")],
    trips: Annotated[
        list[str] | None, typer.Option("--trip", help="A trip id it may use (repeatable)")
    ] = None,
    ttl: Annotated[int, typer.Option("--ttl", help="Seconds until it expires")] = 3600,
    secret_file: Annotated[
        Path | None,
        typer.Option("--secret-file", help="HS256 key file (default: the local run's key)"),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="The local run's state folder")
    ] = None,
) -> None:
    """Print a gateway token (HS256) for testing, signed with the stack's local run key."""
    from scaling.local.tokens import TokenError, mint, read_key, run_key_file

    spec = load(stack)
    try:
        path = secret_file or run_key_file(spec, spec.stack, state_dir)
        typer.echo(mint(spec, read_key(path), sub=sub, role=role, trips=trips or [], ttl=ttl))
    except TokenError as error:
        typer.echo(f"sikka-scaling token: {error}", err=True)
        raise typer.Exit(code=1) from None


@app.command()
def bench(
    stack: StackArg,
    connections: Annotated[
        int | None, typer.Option(help="WebSockets to open (default: gateway.maxConnections)")
    ] = None,
    trips: Annotated[
        int | None,
        typer.Option(help="Trips (default: the table's upper figure, ≤ connections / 2)"),
    ] = None,
    seconds: Annotated[
        int | None, typer.Option(help="Seconds of trip load, the hold (default: 60)")
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(help="Rounds of pgbench and redis-benchmark (default: 3)")
    ] = None,
    pgbench_seconds: Annotated[
        int | None, typer.Option(help="Seconds per pgbench run (default: 10)")
    ] = None,
    redis_requests: Annotated[
        int | None, typer.Option(help="Requests per redis-benchmark run (default: 100000)")
    ] = None,
    open_rate: Annotated[
        float | None, typer.Option(help="WebSockets opened per second, at most (default: 200)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for <stack>.json and .md (default: benchmarks/certificates, or "
            "out/bench when a size or rate option is given)",
        ),
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option("--state-dir", help="The phase's state folder (default: a temp)")
    ] = None,
) -> None:
    """Bring the phase up locally, hold its promised WebSockets through Nginx under the trip
    load, compare pgbench (pooler / direct) and redis-benchmark (phase / plain), write its
    capacity certificate (JSON + Markdown) and stop the phase, whatever happens."""
    from benchmarks.capacity.run import BenchError, run_bench

    load(stack)  # the same validation messages as `validate`
    given = {
        "connections": connections,
        "trips": trips,
        "seconds": seconds,
        "rounds": rounds,
        "pgbench_seconds": pgbench_seconds,
        "redis_requests": redis_requests,
        "open_rate": open_rate,
    }
    options = {name: value for name, value in given.items() if value is not None}
    # Only a run with every default may replace the committed certificates by default.
    folder = out or PROJECT_DIR / ("out/bench" if options else "benchmarks/certificates")

    def say(message: str) -> None:
        typer.echo(f"[bench] {message}", err=True)

    try:
        cert = run_bench(stack, options=options, out=folder, state_dir=state_dir, progress=say)
    except BenchError as error:
        _fail(f"bench {stack}: {error}")
    except KeyboardInterrupt as stopped:
        signum = int(getattr(stopped, "signum", signal.SIGINT))
        name = signal.Signals(signum).name
        typer.echo(f"bench {stack}: stopped by {name}; the phase was stopped", err=True)
        raise typer.Exit(code=128 + signum) from None
    for verdict in cert["verdicts"]:
        typer.echo(f"{verdict['result']:<16} {verdict['promise']}: {verdict['measured']}")
    typer.echo(f"certificate: {folder / (cert['stack'] + '.md')} ({cert['overall']})")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code so tests can call ``main([...])``.

    Every misuse ends in one line on stderr and a non-zero status, never a traceback
    (``SIKKA_DEBUG=1`` shows the traceback of an unexpected error)."""
    try:
        result = app(args=argv, prog_name="sikka-scaling", standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except typer.Abort:
        typer.echo("sikka-scaling: aborted", err=True)
        return 1
    except typer.TyperException as error:  # usage errors, on one line
        ctx = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help(), err=True)
            return 2
        where = ctx.command_path if ctx is not None else "sikka-scaling"
        typer.echo(f"{where}: {one_line(error.format_message(), 400)}", err=True)
        return int(getattr(error, "exit_code", 2))
    except Exception as error:
        if os.environ.get("SIKKA_DEBUG"):
            raise
        message = one_line(f"{type(error).__name__}: {error}", 400)
        typer.echo(f"sikka-scaling: unexpected error: {message}", err=True)
        return 70  # EX_SOFTWARE
    return result if isinstance(result, int) else 0


# Moving a live phase to the next (scaling/transition): `sikka-scaling transition <to>`.
app.command("transition")(transition_command)
# The local runner (scaling/local): `sikka-scaling local up|down|status <stack>`.
app.add_typer(local_app, name="local")
# Measuring a live phase (scaling/metrics): `sikka-scaling check|status|summary <stack>`.
app.command("check")(check_command)
app.command("status")(status_command)
app.command("summary")(summary_command)
# The scaling API (scaling/api): `sikka-scaling serve --stack <stack>` and its tokens.
app.command("serve")(serve_command)
app.command("api-token")(api_token_command)


if __name__ == "__main__":
    sys.exit(main())

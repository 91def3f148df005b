"""`sikka-scaling local up|down|status`: the local runner's command group.

Mounted by scaling/cli.py as ``app.add_typer(local_app, name="local")``; imports nothing
from it. Heavy imports
(psycopg, redis, httpx) happen inside the commands so `validate` and `render` stay quick.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

local_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Run a phase's topology as real processes on loopback (PostgreSQL, or Patroni with "
    "etcd and HAProxy; PgBouncer, Redis, gateways, Nginx).",
)

StackArg = Annotated[str, typer.Argument(help="Stack name (launch, growth, scale) or stack file")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document")]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="State folder (default $SIKKA_STATE_DIR/<stack> or ./.sikka/local/<stack>)",
    ),
]


def _stack_file(stack: str) -> tuple[Path, str]:
    from scaling.stackfiles import StackFileNotFound, stack_name, stack_path

    try:
        path = stack_path(stack)
        return path, stack_name(str(path))
    except StackFileNotFound as error:
        raise typer.BadParameter(str(error), param_hint="STACK") from None


@local_app.command("up")
def local_up(
    stack: StackArg,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a stack value, e.g. pooler.defaultPoolSize=5 "
            "(repeatable; validated like the stack file)",
        ),
    ] = None,
) -> None:
    """Start the stack's topology locally and wait until every part is healthy.

    Interrupted (Ctrl-C, SIGTERM, SIGHUP), it stops everything it started, removes its state
    and exits 128 + the signal's number with one line saying what it stopped; interrupting
    it again only cuts the grace periods short."""
    from scaling.issues import ConfigError
    from scaling.local import runner

    path, name = _stack_file(stack)
    try:
        spec = runner.load_spec(path, runner.parse_set_options(overrides or []))
    except (ConfigError, ValueError) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    try:
        run = runner.up(spec, stack=name, state_dir=state_dir, progress=runner.print_progress)
    except runner.Interrupted as interrupted:
        # The cleanup is done: a late signal must not turn this report into a traceback.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        # After a SIGHUP the terminal may be gone: the report is best effort.
        with contextlib.suppress(OSError):
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "error": "interrupted",
                            "signal": interrupted.signal_name,
                            "part": interrupted.part,
                            "stopped": interrupted.stopped,
                            "state_removed": interrupted.removed,
                        },
                        indent=2,
                    )
                )
            typer.echo(interrupted.describe(name), err=True)
        raise typer.Exit(code=128 + interrupted.signum) from None
    except runner.AlreadyRunning as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    except runner.LocalUpError as error:
        if as_json:
            typer.echo(
                json.dumps(
                    {
                        "error": error.reason,
                        "part": error.part,
                        "log": error.log,
                        "log_tail": error.log_tail,
                    },
                    indent=2,
                )
            )
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    if as_json:
        typer.echo(json.dumps(run.summary, indent=2))
    else:
        typer.echo(_describe(run.summary))


def _describe(summary: dict[str, Any]) -> str:
    pg, redis = summary["postgres"], summary["redis"]
    lines = [
        f"{summary['stack']} ({summary['phase']} phase) is up on 127.0.0.1:",
        f"  nginx        {summary['nginx']['ws_url']}  (status {summary['nginx']['status_url']})",
    ]
    lines += [
        f"  {g['id']:<12} {g['url']}  (metrics {g['metrics_url']})" for g in summary["gateways"]
    ]
    if pg.get("members"):
        lines.append(f"  postgres     read-write {pg['primary']} (follows the Patroni leader)")
        if pg.get("read_only"):
            lines.append(f"               read-only  {pg['read_only']}")
        for member in pg["members"]:
            lead = "  leader" if member["name"] == pg.get("leader") else ""
            lines.append(
                f"               {member['name']:<11} {member['url']}  "
                f"(Patroni {member['api']}){lead}"
            )
    else:
        lines.append(f"  postgres     primary {pg['primary']}")
        lines += [f"               replica {r}" for r in pg["replicas"]]
    if pg["pooler"]:
        lines.append(f"  pgbouncer    {pg['pooler']}")
    if pg.get("pooler_read_only"):
        lines.append(f"               read-only pool {pg['pooler_read_only']}")
    if redis["mode"] == "sentinel":
        lines.append(
            f"  redis        sentinel master '{redis['master_name']}' via "
            f"{', '.join(redis['sentinels'])}"
        )
    elif redis["mode"] == "cluster":
        lines.append(f"  redis        cluster {', '.join(redis['nodes'])}")
    else:
        lines.append(f"  redis        {redis['url']}")
    database = summary.get("database", {})
    if database.get("superuser"):
        roles = f"application {database['user']}, superuser {database['superuser']}"
        if database.get("pooler_admin"):
            roles += f", pgbouncer console {database['pooler_admin']}"
        lines.append(f"  roles        {roles}")
    lines += _monitoring_lines(summary)
    lines.append(f"  passwords    {summary['secrets_file']} (mode 0600)")
    auth = summary.get("gateway_auth") or {}
    if auth.get("key_file"):
        lines.append(
            f"  tokens       HS256 key {auth['key_file']} (mode 0600); mint one with "
            f"sikka-scaling token --stack {summary['stack']} --sub me --role rider --trip T1"
        )
    elif auth.get("mode") == "disabled":
        lines.append("  tokens       gateway authentication is DISABLED for this stack")
    lines.append(f"  logs         {summary['logs']}")
    lines += [f"  note: {note}" for note in summary.get("notes", [])]
    lines.append(f"Stop it with: sikka-scaling local down {summary['stack']}")
    return "\n".join(lines)


def _monitoring_lines(summary: dict[str, Any]) -> list[str]:
    prometheus = summary.get("prometheus")
    if not prometheus:
        return []
    lines = [f"  prometheus   {prometheus['url']}  (data {prometheus['tsdb']})"]
    lines += [f"               {name:<20} {url}" for name, url in prometheus["exporters"].items()]
    return lines


@local_app.command("down")
def local_down(
    stack: StackArg,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the state folder (data, logs)")
    ] = False,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
) -> None:
    """Stop exactly the processes `local up` started for the stack."""
    from scaling.local import runner

    name = _name_only(stack)
    try:
        report = runner.down(name, state_dir=state_dir, keep=keep)
    except (FileNotFoundError, runner.UpInProgress) as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(code=1) from None
    left = [row for row in report if row["result"] == "still running"]
    if as_json:
        typer.echo(json.dumps({"stack": name, "stopped": report}, indent=2))
    else:
        for row in report:
            label = f"{row['name']} (not recorded)" if row.get("unrecorded") else row["name"]
            typer.echo(f"{label:<20} pid {row['pid']}: {row['result']}")
    if left:
        typer.echo(
            f"{len(left)} process(es) could not be stopped; the state is kept: run "
            f"`sikka-scaling local down {name}` again",
            err=True,
        )
        raise typer.Exit(code=1)


@local_app.command("start")
def local_start(
    stack: StackArg,
    node: Annotated[str, typer.Argument(help="The stopped process, e.g. postgres-0")],
    state_dir: StateDirOpt = None,
) -> None:
    """Start a stopped process of the run again (after a kill or a crash), with its data."""
    from scaling.local import runner

    name = _name_only(stack)
    try:
        entry = runner.start_node(name, node, state_dir=state_dir)
    except (FileNotFoundError, KeyError, runner.AlreadyRunning) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        typer.echo(f"local start {name} {node}: {message}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{entry.name:<20} pid {entry.pid}: started")


@local_app.command("status")
def local_status(stack: StackArg, as_json: JsonOpt = False, state_dir: StateDirOpt = None) -> None:
    """What runs for the stack; exit 1 unless every recorded process is alive and nothing
    else is (a run whose `local up` was killed before it finished is reported as such)."""
    from scaling.local import runner

    name = _name_only(stack)
    report = runner.status(name, state_dir=state_dir)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    elif "complete" not in report:
        typer.echo(f"{name}: not running (no state in {report['state_dir']})")
    elif not report["processes"] and not report["unrecorded"]:
        typer.echo(f"{name}: nothing running (state in {report['state_dir']})")
    else:
        for row in report["processes"]:
            typer.echo(_status_line(row))
        if report.get("patroni"):
            typer.echo(f"Patroni leader: {report['patroni']['leader'] or 'none'}")
        for line in _monitoring_lines(report.get("summary") or {}):
            typer.echo(line)
        for stray in report.get("unrecorded", []):
            typer.echo(f"{'(not recorded)':<37} pid {stray['pid']:<8} {stray['command']}")
    if not as_json and report.get("starting"):
        typer.echo(f"{name}: still being started by `local up` (pid {report['owner_pid']})")
    if not as_json and report.get("interrupted"):
        typer.echo(report["interrupted"], err=True)
    if not report.get("all_alive") or report.get("interrupted") or report.get("starting"):
        raise typer.Exit(code=1)


def _status_line(row: dict[str, Any]) -> str:
    """One process; a Patroni member shows its live role, state, timeline and lag, and the
    leader is marked with *."""
    state = "running" if row["alive"] else "stopped"
    # Members, routers and poolers share a port, each on its own loopback address.
    address = f"{row.get('host', '')}:{row['port']}" if row["port"] else ""
    member = row.get("patroni")
    role = member["role"] if member else row["role"]
    line = f"{row['name']:<20} {role:<16} pid {row['pid']:<8} {address:<16} {state}"
    if member:
        lag = "-" if member["lag"] is None else member["lag"]
        line += f"  patroni {member['state']}, timeline {member['timeline']}, lag {lag}"
        line += "  *leader" if row.get("leader") else ""
    return line


def _name_only(stack: str) -> str:
    """`down`/`status` need no stack file: the state is keyed by the stack name."""
    from scaling.stackfiles import StackFileNotFound, stack_name

    try:
        return stack_name(stack)
    except StackFileNotFound as error:
        raise typer.BadParameter(str(error), param_hint="STACK") from None

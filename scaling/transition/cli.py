"""`sikka-scaling transition <to-stack>`: move a live phase to the next, with its data.

Prepares by default (nothing changes but the target's rendered configs); ``--execute
--local`` runs it on the processes of `local up`. Registered on the top-level app by
scaling/cli.py.

Exit codes: 0 prepared or succeeded; 2 refused (usage, a skipped phase or a move
backwards without --force, an unreadable stack, a finished transition run again, a source
still arriving from an unfinished transition, --execute without --local); 3 failed
before the cut-over and rolled back (the source serves); 4 failed or interrupted after the
cut-over (the target serves; run it again to go on); 5 the rollback did not finish (run it
again); 75 another transition of the target is running; 128+N interrupted by signal N
before the cut-over (rolled back).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from scaling.issues import one_line
from scaling.transition import service


def _say(message: str) -> None:
    print(f"[transition] {message}", file=sys.stderr, flush=True)


def transition(
    to_stack: Annotated[
        str, typer.Argument(metavar="TO_STACK", help="The stack to move to, or its stack file")
    ],
    from_stack: Annotated[
        str | None,
        typer.Option("--from", help="The stack to move from (default: the previous phase)"),
    ] = None,
    execute: Annotated[
        bool, typer.Option("--execute", help="Run the transition (default: only prepare)")
    ] = False,
    local: Annotated[
        bool, typer.Option("--local", help="On the processes of `local up` (needed to execute)")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Skip a phase, go backwards, move an unhealthy source or run a finished "
            "transition again",
        ),
    ] = False,
    retire: Annotated[
        bool,
        typer.Option("--retire", help="Remove the source's data once the target serves"),
    ] = False,
    log_file: Annotated[
        Path | None,
        typer.Option(
            "--log", help="Transition log (default: transitions.jsonl in the target's state folder)"
        ),
    ] = None,
    webhook: Annotated[
        str | None,
        typer.Option(
            "--webhook",
            help="POST the outcome here (default: $SIKKA_WEBHOOK_URL, better for a URL that "
            "carries a token: command lines are visible to every user)",
        ),
    ] = None,
    state_root: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="The folder holding the stacks' state folders (default: $SIKKA_STATE_DIR or "
            "./.sikka/local)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document")] = False,
) -> None:
    """Move a live phase to the next with its data: prepare (validate and render the
    target, check the source, list the steps, `pulumi preview`), or --execute --local: start
    the target as a replica, catch up, cut over, validate, retire the source; roll back on a
    failure before the cut-over, only forward after it; an interrupted transition is resumed
    or rolled back by the next run.

    Exit codes: 0 prepared / succeeded, 2 refused, 3 rolled back, 4 failed after the
    cut-over (run again to go on), 5 rollback unfinished, 75 another transition runs,
    128+N interrupted by signal N."""
    if retire and not execute:
        raise typer.BadParameter("only with --execute", param_hint="--retire")
    try:
        if execute:
            result = service.execute(
                to_stack,
                from_stack=from_stack,
                force=force,
                local=local,
                state_root=state_root,
                log_file=log_file,
                progress=_say,
                retire=retire,
                webhook_url=webhook,
            )
        else:
            from components.automation import preview

            result = service.prepare(
                to_stack,
                from_stack=from_stack,
                force=force,
                local=local,
                state_root=state_root,
                log_file=log_file,
                progress=_say,
                preview=preview,
            )
    except service.TransitionRefused as error:
        typer.echo(f"transition: {one_line(str(error), 2000)}", err=True)
        raise typer.Exit(code=service.EXIT_REFUSED) from None
    except service.TransitionBusy as error:
        typer.echo(f"transition: {error}", err=True)
        raise typer.Exit(code=service.EXIT_BUSY) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        typer.echo(result.message)
        for line in result.actions:
            typer.echo(f"  - {line}")
        if result.webhook is not None:
            hook = result.webhook
            said = "delivered" if hook["delivered"] else f"NOT delivered ({hook['error']})"
            typer.echo(f"webhook {hook['webhook']}: {said} after {hook['attempts']} attempt(s)")
        typer.echo(f"log: {result.log}")
        if result.next_steps:
            typer.echo("next:")
            for line in result.next_steps:
                typer.echo(f"  {line}")
    raise typer.Exit(code=result.exit_code)

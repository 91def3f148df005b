"""`sikka-scaling serve` (the scaling API) and `sikka-scaling api-token` (its tokens).
Registered on the top-level app by scaling/cli.py."""

from __future__ import annotations

import ipaddress
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from scaling.metrics.cli import (
    EndpointsOpt,
    HistoryOpt,
    LocalOpt,
    NoHistoryOpt,
    NoHostOpt,
    PrometheusOpt,
    PulumiStackOpt,
    SetOpt,
    StateDirOpt,
    WindowOpt,
    parse_duration,
)

DEFAULT_PORT = 8088


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code=1)


def serve(
    stack: Annotated[str, typer.Option("--stack", help="The stack to serve (name or file)")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", help="Port to listen on", min=1, max=65535)
    ] = DEFAULT_PORT,
    local: LocalOpt = False,
    endpoints_file: EndpointsOpt = None,
    prometheus: PrometheusOpt = None,
    pulumi_stack: PulumiStackOpt = None,
    window: WindowOpt = None,
    history_file: HistoryOpt = None,
    no_history: NoHistoryOpt = False,
    state_dir: StateDirOpt = None,
    state_root: Annotated[
        Path | None,
        typer.Option(
            "--state-root",
            help="Folder of the stacks' state folders, for transitions (default: "
            "$SIKKA_STATE_DIR or ./.sikka/local)",
        ),
    ] = None,
    overrides: SetOpt = None,
    no_host: NoHostOpt = False,
    refresh: Annotated[
        float, typer.Option("--refresh", help="Seconds between the status page's updates", min=1)
    ] = 5.0,
) -> None:
    """Serve the scaling API and the status page for a stack (FastAPI + uvicorn).

    The checker's sources and window are passed through as `status` takes them. Tokens:
    SIKKA_JWT_SECRET (HS256) or SIKKA_JWT_JWKS_URL (RS256/ES256); SIKKA_JWT_AUDIENCE
    (default sikka-scaling), SIKKA_JWT_ISSUER, SIKKA_JWT_LEEWAY. Refuses to start without a
    key source."""
    import uvicorn

    from scaling.api.app import ServerSettings, create_app
    from scaling.api.auth import KeySourceError, Verifier, settings_from_env
    from scaling.api.documents import (
        CheckerDocuments,
        CheckOptions,
        Misconfigured,
        Unavailable,
    )
    from scaling.issues import ConfigError
    from scaling.stackfiles import StackFileNotFound

    try:
        auth = settings_from_env()
    except KeySourceError as error:
        raise _fail(f"serve: {error}") from None
    if window:
        parse_duration(window, "--window")
    options = CheckOptions(
        stack=stack,
        local=local,
        endpoints_file=endpoints_file,
        prometheus=prometheus,
        pulumi_stack=pulumi_stack,
        window=window,
        history_file=history_file,
        no_history=no_history,
        state_dir=state_dir if state_dir or state_root is None else state_root / stack,
        overrides=list(overrides or []),
        no_host=no_host,
    )
    try:
        documents = CheckerDocuments(options)
    except StackFileNotFound as error:
        raise typer.BadParameter(str(error), param_hint="--stack") from None
    except (ConfigError, ValueError) as error:
        raise _fail(f"serve: {error}") from None
    # One measurement before listening: conflicting sources fail now, as `status` would;
    # a phase not running yet is said and served (503 until it can be measured).
    try:
        documents.measured()
    except Misconfigured as error:
        raise _fail(f"serve: {error}") from None
    except Unavailable as error:
        typer.echo(
            f"serve: cannot measure {documents.stack} now ({error}); serving anyway", err=True
        )
    settings = ServerSettings(
        from_stack=documents.stack, local=local, state_root=state_root, refresh_seconds=refresh
    )
    app = create_app(documents, Verifier(auth), settings)
    if not _loopback(host):
        typer.echo(
            f"serve: listening on {host} over plain HTTP: put a TLS proxy in front, tokens "
            "are bearer credentials",
            err=True,
        )
    typer.echo(
        f"serving {documents.stack} ({documents.phase} phase) on http://{host}:{port} "
        f"(tokens: {auth.source}, audience {auth.audience!r}"
        + (f", issuer {auth.issuer!r}" if auth.issuer else "")
        + ")",
        err=True,
    )
    # The API's own lines (who logged in, who started a transition) beside uvicorn's.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logger = logging.getLogger("sikka")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="info",
        server_header=False,
        proxy_headers=False,  # the client address logged is the peer's, never a header's
        timeout_graceful_shutdown=None,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_token(
    sub: Annotated[str, typer.Option("--sub", help="Who the token is for (a person or a CI job)")],
    roles: Annotated[
        list[str] | None,
        typer.Option("--role", help="viewer (read) or operator (may transition); repeatable"),
    ] = None,
    ttl: Annotated[
        str, typer.Option("--ttl", help="Lifetime: seconds or 30m / 8h (default 1h)")
    ] = "1h",
    audience: Annotated[
        str | None,
        typer.Option("--audience", help="aud claim (default $SIKKA_JWT_AUDIENCE or sikka-scaling)"),
    ] = None,
    issuer: Annotated[
        str | None, typer.Option("--issuer", help="iss claim (default $SIKKA_JWT_ISSUER)")
    ] = None,
) -> None:
    """Print a scaling API token (HS256, signed with $SIKKA_JWT_SECRET) on stdout."""
    from scaling.api.auth import (
        AUDIENCE_ENV,
        DEFAULT_AUDIENCE,
        ISSUER_ENV,
        SECRET_ENV,
        VIEWER,
        KeySourceError,
        mint,
    )

    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise _fail(
            f"api-token: {SECRET_ENV} is not set (the HS256 key the server checks tokens with; "
            "a JWKS server's tokens come from its identity provider)"
        )
    seconds = parse_duration(ttl, "--ttl")
    try:
        token = mint(
            secret.encode(),
            subject=sub,
            roles=roles or [VIEWER],
            ttl=seconds,
            audience=audience or os.environ.get(AUDIENCE_ENV) or DEFAULT_AUDIENCE,
            issuer=issuer or os.environ.get(ISSUER_ENV) or None,
        )
    except (KeySourceError, ValueError) as error:
        raise _fail(f"api-token: {error}") from None
    until = datetime.fromtimestamp(datetime.now(UTC).timestamp() + seconds, UTC)
    typer.echo(
        f"token for {sub} ({', '.join(sorted(set(roles or [VIEWER])))}), valid until "
        f"{until:%Y-%m-%d %H:%M:%S} UTC",
        err=True,
    )
    typer.echo(token)

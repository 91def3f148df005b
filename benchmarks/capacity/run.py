"""`sikka-scaling bench <stack>`: bring the phase up with the local runner, measure what it
holds, write its certificate, and stop the phase whatever happens.

In order: the WebSockets (opened through Nginx at a bounded rate from several source
addresses, held through the trip load, counted again at its end), the trip load on them,
pgbench through the pooler and directly, redis-benchmark against the phase's Redis and a
plain redis-server. Ctrl-C, SIGTERM or SIGHUP stop the phase and exit 128 + the signal.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import resource
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from benchmarks import pooler
from benchmarks.capacity import certificate, connections, machine, plan, redisbench, stats
from benchmarks.capacity.trips import run_trip_load
from scaling.local import limits, runner
from scaling.local.credentials import generate_password
from scaling.local.redis import binaries
from scaling.local.tokens import mint
from scaling.model import PhaseSpec
from scaling.stackfiles import stack_name, stack_path

# Descriptors the bench process needs beside one per WebSocket (pgbench and redis-benchmark
# are processes of their own).
SPARE_DESCRIPTORS = 256
TOKEN_TTL_SECONDS = 3 * 3600
# pgbench -i's scale, made once before the rounds.
PGBENCH_SCALE = 10

Progress = Callable[[str], None]


class BenchError(RuntimeError):
    """The bench cannot run or a measurement failed; one line says which."""


class Stopped(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP end the bench as Ctrl-C does (so the phase is stopped)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """While the phase is stopped: a further signal must not cut the teardown short."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ensure_descriptors(needed: int) -> int:
    """Raise this process's open-file soft limit to ``needed`` (up to the hard limit)."""
    soft, hard = limits.limit_for(needed)
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise BenchError(
            f"--connections needs {needed} open files and the hard limit is {hard}: "
            f"raise it (ulimit -Hn {needed}) or pass fewer --connections"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def token_factory(
    spec: PhaseSpec, run: runner.LocalRun, the_plan: plan.Plan
) -> Callable[[int], str | None]:
    """Connection index -> its token: a driver's or rider's, for its own trip only."""
    auth = spec.gateway.auth
    if auth.mode == "disabled":
        return lambda index: None
    if not auth.shared_secret:
        raise BenchError(
            "sikka:gateway.auth.jwksUrl is set: the bench mints HS256 tokens only, and the "
            "gateways would take RS256/ES256 tokens from the identity provider"
        )
    key = run.secrets["gateway-jwt-secret"]
    roles = plan.members(the_plan.connections, the_plan.trips)

    def token_for(index: int) -> str:
        member = roles[index]
        return mint(
            spec,
            key,
            sub=f"bench-{index}",
            role="driver" if member.driver else "rider",
            trips=[plan.trip_id(the_plan.stack, member.trip)],
            ttl=TOKEN_TTL_SECONDS,
        )

    return token_for


async def measure_websockets(
    the_plan: plan.Plan, url: str, token_for: Callable[[int], str | None], say: Progress
) -> tuple[dict[str, Any], dict[str, Any]]:
    say(f"opening {the_plan.connections:,} WebSockets through Nginx")
    opened = await connections.open_connections(
        url,
        the_plan.connections,
        source_for=lambda i: the_plan.source_addresses[i // the_plan.per_address],
        token_for=token_for,
        rate=the_plan.open_rate,
        concurrency=the_plan.open_concurrency,
    )
    try:
        say(
            f"opened {len(opened.connections):,} in {opened.seconds:.1f} s; trip load: "
            f"{the_plan.trips:,} trips for {the_plan.seconds} s"
        )
        trip_ids = [plan.trip_id(the_plan.stack, t) for t in range(the_plan.trips)]
        figures = await run_trip_load(
            {i: o.ws for i, o in opened.connections.items()},
            plan.members(the_plan.connections, the_plan.trips),
            trip_ids,
            seconds=the_plan.seconds,
        )
        counts = connections.tally(opened)
    finally:
        await connections.close_all(opened)
    return counts, figures


def _direct_url(summary: dict[str, Any]) -> str:
    """PostgreSQL without pooler or router: the leader itself under Patroni."""
    pg = summary["postgres"]
    leader = next((m for m in pg["members"] if m["name"] == pg["leader"]), None)
    return str(leader["url"] if leader else pg["primary"])


def pgbench_figures(result: dict[str, Any]) -> dict[str, Any]:
    """The certificate's pgbench part from benchmarks.pooler.compare_pooler's result: per
    workload the TPS and login time of every round, and pooler / direct round by round
    (rounds whose direct TPS is 0 left out)."""
    figures: dict[str, Any] = {
        "direct_clients": result["direct_clients"],
        "pooler_clients": result["clients"],
        "pooler_addresses": result["hosts"]["pooler"],
        "seconds": result["seconds"],
        "rounds": result["rounds"],
        "scale": result["scale"],
        "failed_transactions": sum(sum(w["failed"].values()) for w in result["workloads"].values()),
        "workloads": {},
    }
    for workload, summary in result["workloads"].items():
        direct_tps = [round(t, 1) for t in summary["tps"]["direct"]]
        pooler_tps = [round(t, 1) for t in summary["tps"]["pooler"]]
        each = [round(r, 3) for r in stats.ratios(pooler_tps, direct_tps)]
        figures["workloads"][workload] = {
            "direct_tps": direct_tps,
            "pooler_tps": pooler_tps,
            "direct_connect_ms": [round(s * 1000) for s in summary["login_seconds"]["direct"]],
            "pooler_connect_ms": [round(s * 1000) for s in summary["login_seconds"]["pooler"]],
            "ratios": each,
            "ratio": stats.spread(each),
        }
    return figures


def measure_pgbench(
    the_plan: plan.Plan, spec: PhaseSpec, run: runner.LocalRun, say: Progress
) -> dict[str, Any]:
    summary = run.summary
    if not the_plan.pooler or not summary["postgres"]["pooler"]:
        return {"skipped": f"the {the_plan.phase} phase has no pooler (pooler.enabled: false)"}
    say(f"pgbench: pooler against direct, {the_plan.rounds} rounds")
    direct = _direct_url(summary)
    try:
        result = pooler.compare_pooler(
            direct,
            summary["postgres"]["pooler"],  # its clients spread over every pooler address
            run.secrets["postgres-password"],
            clients=the_plan.pgbench_pooler_clients,
            seconds=the_plan.pgbench_seconds,
            rounds=the_plan.rounds,
            direct_clients=the_plan.pgbench_direct_clients,
            release=pooler.release_idle(
                make_conninfo(direct, user="postgres"),
                run.secrets["postgres-superuser-password"],
                spec.postgres.user,
            ),
            scale=PGBENCH_SCALE,
        )
    except (pooler.PgbenchError, OSError, subprocess.SubprocessError, psycopg.Error) as error:
        return {"error": str(error)}
    return pgbench_figures(result)


def measure_redis(
    the_plan: plan.Plan, spec: PhaseSpec, run: runner.LocalRun, say: Progress
) -> dict[str, Any]:
    say(f"redis-benchmark: the phase's Redis against a plain one, {the_plan.rounds} rounds")
    try:
        target = redisbench.phase_target(run.summary["redis"], run.secrets["redis-password"])
        with redisbench.plain_server(binaries(spec)[0], generate_password()) as plain:
            return redisbench.compare_redis(
                target,
                plain,
                requests=the_plan.redis_requests,
                clients=the_plan.redis_clients,
                pipeline=the_plan.redis_pipeline,
                rounds=the_plan.rounds,
            )
    except (redisbench.RedisBenchError, OSError) as error:
        return {"error": str(error), "target": "phase", "tests": {}}


def assemble(
    the_plan: plan.Plan,
    started: datetime.datetime,
    host: dict[str, Any],
    versions: dict[str, Any],
    conns: dict[str, Any],
    trips: dict[str, Any],
    pg: dict[str, Any],
    rd: dict[str, Any],
    notes: list[str],
) -> dict[str, Any]:
    cert: dict[str, Any] = {
        "stack": the_plan.stack,
        "phase": the_plan.phase,
        "date": started.isoformat(timespec="seconds"),
        "parameters": the_plan.as_dict(),
        "machine": host,
        "versions": versions,
        "connections": {"promised": the_plan.promised_connections, **conns},
        "trips": trips,
        "pgbench": pg,
        "redis": rd,
        "notes": notes,
    }
    cert["verdicts"] = certificate.verdicts(cert)
    cert["overall"] = certificate.overall(cert["verdicts"])
    return cert


def write(cert: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    as_json, as_md = out / f"{cert['stack']}.json", out / f"{cert['stack']}.md"
    as_json.write_text(json.dumps(cert, indent=2) + "\n")
    as_md.write_text(certificate.render_markdown(cert))
    return as_json, as_md


def run_bench(
    stack: str,
    *,
    options: dict[str, Any],
    out: Path,
    state_dir: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure ``stack`` and write its certificate into ``out``; returns the certificate."""
    say = progress or (lambda message: None)
    path = stack_path(stack)
    name = stack_name(str(path))
    spec = runner.load_spec(path)
    try:
        the_plan = plan.make_plan(spec, name, **options)
    except plan.PlanError as error:
        raise BenchError(str(error)) from None
    ensure_descriptors(the_plan.connections + SPARE_DESCRIPTORS)
    started = datetime.datetime.now(datetime.UTC)
    host = machine.machine()
    versions = machine.versions(runner.PROJECT_DIR, binaries(spec)[0])
    with contextlib.ExitStack() as stack_of:
        if state_dir is None:
            folder = stack_of.enter_context(tempfile.TemporaryDirectory(prefix="sikka-bench-"))
            state_dir = Path(folder) / "state"
        stack_of.enter_context(_signals_stop())
        say(f"starting the {the_plan.phase} phase (local runner, state in {state_dir})")
        try:
            run = runner.up(spec, stack=f"bench-{name}", state_dir=state_dir, progress=say)
        except (runner.LocalUpError, runner.AlreadyRunning) as error:
            raise BenchError(str(error)) from None
        try:
            conns, trips = connections.run_client(
                measure_websockets(
                    the_plan,
                    run.summary["nginx"]["ws_url"],
                    token_factory(spec, run, the_plan),
                    say,
                )
            )
            pg = measure_pgbench(the_plan, spec, run, say)
            rd = measure_redis(the_plan, spec, run, say)
            notes = list(run.summary.get("notes", []))
        finally:
            with _signals_ignored():
                say("stopping the phase")
                left = [r for r in run.down() if r["result"] == "still running"]
            if left:
                say("could not stop: " + ", ".join(f"{r['name']} ({r['pid']})" for r in left))
    cert = assemble(the_plan, started, host, versions, conns, trips, pg, rd, notes)
    write(cert, out)
    return cert

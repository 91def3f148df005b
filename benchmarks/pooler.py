"""Does PgBouncer keep up? pgbench through the phase's poolers and directly against the
primary, side by side, at 10x oversubscription.

    python -m benchmarks.pooler [--stack growth] [--seconds 20] [--rounds 3] [--no-before]

What is compared with what:

* **through the pooler**: ``clients`` pgbench clients, 10 x the server connections the poolers
  may open to the primary (``pooler.replicas x pooler.defaultPoolSize``), spread evenly over
  the pooler addresses (one pgbench per address, as a Service would spread them; libpq 15's
  multi-host URL would send every client to the first host), through the phase's real path:
  PgBouncer, then HAProxy, then the Patroni leader.
* **direct**: ``direct_clients`` = those same ``replicas x defaultPoolSize`` connections,
  straight to the leader (no router). That is the best PostgreSQL does with as many backends
  as the poolers hold open; it also fits ``max_connections``, which 10x the clients would not.
  The ratio pooler/direct is then what pooling costs a client, routers included.
* **router** (phases with Patroni): the same ``direct_clients`` through the HAProxy routers,
  the door a client without the pooler uses in this phase; pooler/router is what PgBouncer
  itself costs, the hop every path to the leader takes left out.
* **before** (unless ``--no-before``): the same poolers as ``pooler.processes = 1`` would render
  them, started by this benchmark from the same renderer, beside the phase's own.

Rounds alternate (direct, router, pooler, before, direct, ...) so the machine's other load
spreads over every variant; before each round the idle server connections the poolers keep
are closed (``pg_terminate_backend`` as the superuser), so every variant starts from the same
empty PostgreSQL. ``-i`` runs once, directly, at a small scale. Login time is pgbench's "initial
connection time" of each pooler round: every client logs in (SCRAM) before the run starts.
pgbench's ``-T`` includes that time, and its tps excludes it. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from scaling.local.procs import pg_bin

WORKLOADS = {"select-only": ["-S"], "tpcb-like": []}
TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
CONNECT = re.compile(r"^initial connection time = ([0-9.]+) ms", re.M)
FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    connect_seconds: float
    failed: int


def split_hosts(dsn: str) -> list[str]:
    """One conninfo per host of a (multi-host) libpq DSN."""
    params = conninfo_to_dict(dsn)
    hosts = str(params.get("host", "")).split(",")
    ports = str(params.get("port", "")).split(",")
    if len(ports) == 1:
        ports = ports * len(hosts)
    out = []
    for host, port in zip(hosts, ports, strict=True):
        one: dict[str, Any] = {**params, "host": host}
        if port:
            one["port"] = port
        out.append(make_conninfo(**one))
    return out


def pgbench(
    dsn: str, password: str, args: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(
        [pg_bin("pgbench"), *args, dsn], capture_output=True, text=True, env=env, timeout=timeout
    )


# pgbench's -T counts from before the logins, and its tps leaves them out: -T is the wanted
# measuring time plus room for the logins, LOGIN_ROOM per client to start with (the machine's
# other load can make a SCRAM login take tens of milliseconds), and the round is run again
# with more room when the logins left less than half the wanted time.
LOGIN_ROOM = 0.03


class PgbenchError(RuntimeError):
    """pgbench could not run, or its output has no figures."""


def parse_run(output: str) -> PgbenchResult:
    """One pgbench run's figures from its output. A run whose clients were still logging in
    when it ended processed nothing and prints no tps: a tps of 0 (run_spread then reruns
    it with more room for the logins)."""
    tps, connect, failed = TPS.search(output), CONNECT.search(output), FAILED.search(output)
    failures = int(failed.group(1)) if failed else 0
    connect_seconds = float(connect.group(1)) / 1000 if connect else 0.0
    if tps is None and "actually processed: 0\n" in output:
        return PgbenchResult(0.0, connect_seconds, failures)
    if tps is None or connect is None:
        raise PgbenchError(f"no tps in pgbench's output: {output.strip()[-300:]}")
    return PgbenchResult(float(tps.group(1)), connect_seconds, failures)


def run_pgbench(
    dsn: str, password: str, workload: str, clients: int, threads: int, duration: int
) -> PgbenchResult:
    args = ["-n", *WORKLOADS[workload], "-c", str(clients), "-j", str(min(threads, clients))]
    done = pgbench(dsn, password, [*args, "-T", str(duration)], timeout=duration + 120)
    # Exit code 2: some clients failed, the others' figures are still printed.
    if done.returncode not in (0, 2):
        raise PgbenchError(
            f"pgbench {' '.join(args)} failed ({done.returncode}): "
            f"{(done.stderr + done.stdout).strip()[-800:]}"
        )
    try:
        return parse_run(done.stdout)
    except PgbenchError as error:
        raise PgbenchError(
            f"pgbench {' '.join(args)} ({done.returncode}): {done.stderr.strip()[-500:]} {error}"
        ) from None


def run_spread(
    dsns: Sequence[str],
    password: str,
    workload: str,
    clients: int,
    threads: int,
    seconds: float,
) -> PgbenchResult:
    """``clients`` spread evenly over ``dsns``, one pgbench each, all at once; tps adds up,
    the login time is the slowest pgbench's. At least ``seconds`` / 2 measured after the
    logins (see LOGIN_ROOM)."""
    count = len(dsns)
    shares = [clients // count + (1 if i < clients % count else 0) for i in range(count)]
    per = max(1, threads // count)
    room = max(5.0, LOGIN_ROOM * clients)
    for _ in range(3):
        duration = int(seconds + room)
        with ThreadPoolExecutor(count) as pool:
            results = list(
                pool.map(
                    run_pgbench,
                    dsns,
                    [password] * count,
                    [workload] * count,
                    shares,
                    [per] * count,
                    [duration] * count,
                )
            )
        login = max(r.connect_seconds for r in results)
        if duration - login >= seconds / 2 and all(r.tps > 0 for r in results):
            break
        room = 2 * login + 5
    return PgbenchResult(sum(r.tps for r in results), login, sum(r.failed for r in results))


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def compare_pooler(
    direct_dsn: str,
    pooler_dsn: str | Sequence[str],
    password: str,
    clients: int,
    seconds: float,
    rounds: int,
    workloads: Sequence[str] = ("select-only", "tpcb-like"),
    *,
    direct_clients: int,
    variants: dict[str, str | Sequence[str]] | None = None,
    routes: dict[str, str] | None = None,
    release: Callable[[], None] | None = None,
    threads: int = 2,
    scale: int = 4,
    initialize: bool = True,
) -> dict[str, Any]:
    """pgbench through ``pooler_dsn`` (``clients`` clients spread over its hosts) and straight
    to ``direct_dsn`` (``direct_clients`` clients), in alternating rounds.

    ``variants``: more poolers to measure in the same rounds (name -> DSN); ``routes``: more
    pooler-less doors (name -> DSN, e.g. the routers), each given ``direct_clients`` clients
    and each a baseline the poolers' ratios are also taken to. ``release`` runs
    before every round (close the poolers' idle server connections, so that the direct round
    finds PostgreSQL's connections free). Returns, per workload, each variant's tps per round
    and its ratio to the direct round beside it (min/median/max), and each pooler variant's
    login time for ``clients`` clients.
    """
    baselines = ["direct", *(routes or {})]
    targets: dict[str, list[str]] = {"direct": [direct_dsn]}
    for name, dsn in {**(routes or {}), "pooler": pooler_dsn, **(variants or {})}.items():
        dsns = [dsn] if isinstance(dsn, str) else list(dsn)
        targets[name] = [one for d in dsns for one in split_hosts(d)]
    if initialize:
        done = pgbench(direct_dsn, password, ["-i", "-q", "-s", str(scale)], timeout=300)
        if done.returncode != 0:
            raise PgbenchError(f"pgbench -i failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = {
        "clients": clients,
        "direct_clients": direct_clients,
        "seconds": seconds,
        "rounds": rounds,
        "threads": threads,
        "scale": scale,
        "baselines": baselines,
        "hosts": {name: len(dsns) for name, dsns in targets.items()},
        "workloads": {},
    }
    for workload in workloads:
        tps: dict[str, list[float]] = {name: [] for name in targets}
        login: dict[str, list[float]] = {name: [] for name in targets}
        failed: dict[str, int] = dict.fromkeys(targets, 0)
        for _ in range(rounds):
            for name, dsns in targets.items():
                if release is not None:
                    release()
                count = direct_clients if name in baselines else clients
                got = run_spread(dsns, password, workload, count, threads, seconds)
                tps[name].append(got.tps)
                login[name].append(got.connect_seconds)
                failed[name] += got.failed
        summary: dict[str, Any] = {"tps": tps, "login_seconds": login, "failed": failed}
        for name in targets:
            if name in baselines:
                continue
            for base in baselines:
                ratios = [
                    p / d if d > 0 else math.inf for p, d in zip(tps[name], tps[base], strict=True)
                ]
                key = f"{name}_ratio" if base == "direct" else f"{name}_ratio_{base}"
                summary[key] = {"rounds": ratios, **spread(ratios)}
            summary[f"{name}_login"] = spread(login[name])
        result["workloads"][workload] = summary
    return result


def report(result: dict[str, Any]) -> str:
    baselines = result.get("baselines", ["direct"])
    lines = [
        f"pgbench: {result['clients']} clients through each pooler variant, "
        f"{result['direct_clients']} through {', '.join(baselines)} (addresses: "
        f"{result['hosts']}); {result['rounds']} alternating rounds of "
        f"{result['seconds']:.0f} s, -j {result['threads']}, scale {result['scale']}",
    ]
    for workload, summary in result["workloads"].items():
        lines.append(f"{workload}:")
        for name, values in summary["tps"].items():
            row = f"  {name:<8} tps " + " ".join(f"{v:>8.0f}" for v in values)
            count = result["direct_clients"] if name in baselines else result["clients"]
            if name not in baselines:
                for base in baselines:
                    key = f"{name}_ratio" if base == "direct" else f"{name}_ratio_{base}"
                    ratio = summary[key]
                    row += (
                        f"   / {base} {ratio['min']:.2f} {ratio['median']:.2f} {ratio['max']:.2f}"
                    )
            login = spread(summary["login_seconds"][name])
            row += (
                f"   login {count} clients "
                f"{login['min']:.2f}/{login['median']:.2f}/{login['max']:.2f} s"
            )
            if summary["failed"][name]:
                row += f"   ({summary['failed'][name]} failed transactions)"
            lines.append(row)
    lines.append("(ratios and login times: min median max over the rounds)")
    return "\n".join(lines)


# ---------------------------------------------------------------- driving a local phase


def release_idle(superuser_dsn: str, password: str, user: str) -> Callable[[], None]:
    """Closes every connection of ``user`` (the poolers' idle server connections; no pgbench
    runs between rounds) and waits until PostgreSQL has let them go."""

    def release() -> None:
        with psycopg.connect(superuser_dsn, password=password, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = %s AND pid <> pg_backend_pid()",
                (user,),
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (user,)
                ).fetchone()
                if row and row[0] == 0:
                    return
                time.sleep(0.1)

    return release


def _start_before_poolers(run: Any, spec: Any, folder: Path) -> tuple[list[str], list[Any]]:
    """The phase's poolers as ``pooler.processes = 1`` renders them (one process, the whole
    pools), on addresses of their own, pooling the same routers with the same users."""
    from scaling.local import procs
    from scaling.local.ports import PortAllocator
    from scaling.render.endpoints import Endpoint
    from scaling.render.pgbouncer import PoolerLayout, render_pgbouncer_ini

    before = spec.model_copy(update={"pooler": spec.pooler.model_copy(update={"processes": 1})})
    pg = run.summary["postgres"]
    primary = conninfo_to_dict(pg["primary"])
    replicas = conninfo_to_dict(pg["read_only"]) if pg.get("read_only") else None
    hosts = tuple(f"127.0.4.{i + 1}" for i in range(spec.pooler.replicas))
    port = PortAllocator().take(hosts)
    pooler_dir = Path(run.entry("pgbouncer-0").argv[1]).parent
    user = "postgres" if procs.running_as_root() else None
    started, dsns = [], []
    folder.chmod(0o777)
    for i, host in enumerate(hosts):
        layout = PoolerLayout(
            listen=Endpoint(host, port),
            primary=Endpoint(str(primary["host"]), int(str(primary["port"]).split(",")[0])),
            replica_hosts=tuple(str(replicas["host"]).split(",")) if replicas else (),
            replica_port=int(str(replicas["port"]).split(",")[0]) if replicas else 0,
            auth_file=str(pooler_dir / "userlist.txt"),
            hba_file=str(pooler_dir / "pgbouncer_hba.conf"),
            client_networks=("127.0.0.0/8",),
            logfile=str(folder / f"before-{i}.log"),
        )
        ini = folder / f"before-{i}.ini"
        ini.write_text(render_pgbouncer_ini(before, layout))
        argv = ["pgbouncer", str(ini)]
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        started.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        dsns.append(f"postgresql://{spec.postgres.user}@{host}:{port}/{spec.postgres.database}")
    deadline = time.monotonic() + 15
    password = run.secrets["postgres-password"]
    for dsn in dsns:
        while True:
            try:
                with psycopg.connect(dsn, password=password, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    return dsns, started


def main(argv: list[str] | None = None) -> int:
    from scaling.local.runner import PROJECT_DIR, load_spec, up

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stack", default="growth", help="growth or scale (launch pools nothing)")
    parser.add_argument("--seconds", type=float, default=20, help="pgbench -T per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="pgbench threads per variant")
    parser.add_argument("--oversubscription", type=int, default=10)
    parser.add_argument("--workload", action="append", choices=sorted(WORKLOADS))
    parser.add_argument("--set", action="append", default=[], help="stack override, a.b=value")
    parser.add_argument("--no-before", action="store_true", help="skip the one-process poolers")
    args = parser.parse_args(argv)
    from scaling.local.runner import parse_set_options

    spec = load_spec(PROJECT_DIR / f"Pulumi.{args.stack}.yaml", parse_set_options(args.set))
    if not spec.pooler.enabled:
        parser.error(f"the {args.stack} phase has no pooler (pooler.enabled=true to add one)")
    if shutil.which(pg_bin("pgbench")) is None:
        parser.error("pgbench is not installed")
    server_connections = spec.pooler.replicas * spec.pooler.default_pool_size
    with tempfile.TemporaryDirectory(prefix="sikka-bench-pooler-") as tmp:
        run = up(spec, stack=f"bench-pooler-{args.stack}", state_dir=Path(tmp) / "state")
        before: list[Any] = []
        try:
            pg = run.summary["postgres"]
            leaders = [m["url"] for m in pg["members"] if m["name"] == pg["leader"]]
            direct = leaders[0] if leaders else pg["primary"]
            superuser = make_conninfo(direct, user="postgres")
            variants: dict[str, str | Sequence[str]] = {}
            if not args.no_before:
                dsns, before = _start_before_poolers(run, spec, Path(tmp))
                variants["before"] = dsns
            result = compare_pooler(
                direct,
                pg["pooler"],
                run.secrets["postgres-password"],
                clients=args.oversubscription * server_connections,
                seconds=args.seconds,
                rounds=args.rounds,
                workloads=tuple(args.workload or WORKLOADS),
                direct_clients=server_connections,
                variants=variants,
                routes={"router": pg["primary"]} if pg["members"] else None,
                release=release_idle(
                    superuser, run.secrets["postgres-superuser-password"], spec.postgres.user
                ),
                threads=args.threads,
            )
        finally:
            for proc in before:
                proc.terminate()
                proc.wait(timeout=10)
            run.down()
    print(
        f"{args.stack}: pooler.replicas {spec.pooler.replicas} x processes "
        f"{spec.pooler.processes}, defaultPoolSize {spec.pooler.default_pool_size}; "
        "'before' = the same poolers with processes 1"
    )
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

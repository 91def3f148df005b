"""Does PgBouncer keep up? pgbench through the phase's poolers and directly against the
primary, side by side, at 10x oversubscription.

    python -m benchmarks.pooler [--stack growth] [--seconds 20] [--rounds 3]
        [--no-before | --before one-process|plaintext-auth] [--before-setting 'key = value']

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
* **before** (unless ``--no-before``): the same poolers as they were before a change, started
  by this benchmark from the same renderer beside the phase's own (``--before``):
  ``one-process``, as ``pooler.processes = 1`` renders them; ``plaintext-auth``, with the
  password itself in their auth file instead of its SCRAM verifier. ``--before-setting``
  adds a pgbouncer.ini line to them: a setting tried side by side.

Rounds alternate (direct, router, pooler, before, direct, ...) so the machine's other load
spreads over every variant; before each round the idle server connections the poolers keep
are closed (``pg_terminate_backend`` as the superuser), so every variant starts from the same
empty PostgreSQL. ``-i`` runs once, directly, at a small scale. Login time is pgbench's "initial
connection time" of each pooler round: every client logs in (SCRAM) before the run starts.
pgbench's ``-T`` includes that time, and its tps excludes it. Each variant's CPU time per
transaction, per kind of process (postgres, pgbouncer, haproxy, pgbench), shows where a path
spends what the machine has: on a shared machine this holds where throughput does not. Prints
figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import pwd
import re
import resource
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

import psutil
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from scaling.local.procs import pg_bin

WORKLOADS = {"select-only": ["-S"], "tpcb-like": []}
TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
CONNECT = re.compile(r"^initial connection time = ([0-9.]+) ms", re.M)
FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.M)


@dataclass(frozen=True)
class PgbenchResult:
    tps: float
    connect_seconds: float
    failed: int
    transactions: int = 0
    # CPU seconds pgbench itself used (user + system), logins included.
    client_cpu: float = 0.0


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
    processed = PROCESSED.search(output)
    failures = int(failed.group(1)) if failed else 0
    count = int(processed.group(1)) if processed else 0
    connect_seconds = float(connect.group(1)) / 1000 if connect else 0.0
    if tps is None and "actually processed: 0\n" in output:
        return PgbenchResult(0.0, connect_seconds, failures)
    if tps is None or connect is None:
        raise PgbenchError(f"no tps in pgbench's output: {output.strip()[-300:]}")
    return PgbenchResult(float(tps.group(1)), connect_seconds, failures, count)


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
        before = _children_cpu()
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
        client_cpu = _children_cpu() - before
        login = max(r.connect_seconds for r in results)
        if duration - login >= seconds / 2 and all(r.tps > 0 for r in results):
            break
        room = 2 * login + 5
    return PgbenchResult(
        sum(r.tps for r in results),
        login,
        sum(r.failed for r in results),
        sum(r.transactions for r in results),
        client_cpu,
    )


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (the pgbench runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_per_transaction(
    start: dict[str, float], end: dict[str, float], client_cpu: float, transactions: int
) -> dict[str, float]:
    """CPU microseconds per transaction of each kind of process between two meter readings,
    and pgbench's own (``client_cpu``); nothing when no transaction ran."""
    if transactions <= 0:
        return {}
    used = {part: end[part] - start.get(part, 0.0) for part in end}
    used["pgbench"] = client_cpu
    return {part: 1e6 * seconds / transactions for part, seconds in used.items()}


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
    meter: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """pgbench through ``pooler_dsn`` (``clients`` clients spread over its hosts) and straight
    to ``direct_dsn`` (``direct_clients`` clients), in alternating rounds.

    ``variants``: more poolers to measure in the same rounds (name -> DSN); ``routes``: more
    pooler-less doors (name -> DSN, e.g. the routers), each given ``direct_clients`` clients
    and each a baseline the poolers' ratios are also taken to. ``release`` runs
    before every round (close the poolers' idle server connections, so that the direct round
    finds PostgreSQL's connections free). Returns, per workload, each variant's tps per round
    and its ratio to the direct round beside it (min/median/max), and each pooler variant's
    login time for ``clients`` clients. ``meter``: the servers' CPU seconds so far, per kind
    of process; with it, each variant's CPU microseconds per transaction (logins included;
    ``pgbench``: the clients' own), the median over the rounds; the load average (1 min)
    after each round, min/median/max.
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
        cpu: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        load: list[float] = []
        for _ in range(rounds):
            for name, dsns in targets.items():
                if release is not None:
                    release()
                count = direct_clients if name in baselines else clients
                start = meter() if meter is not None else {}
                got = run_spread(dsns, password, workload, count, threads, seconds)
                used = meter() if meter is not None else {}
                tps[name].append(got.tps)
                login[name].append(got.connect_seconds)
                failed[name] += got.failed
                load.append(os.getloadavg()[0])
                cpu[name].append(cpu_per_transaction(start, used, got.client_cpu, got.transactions))
        summary: dict[str, Any] = {
            "tps": tps,
            "login_seconds": login,
            "failed": failed,
            "cpu_us_per_transaction": {
                name: {
                    part: statistics.median([r[part] for r in rows if part in r])
                    for part in sorted({p for r in rows for p in r})
                }
                for name, rows in cpu.items()
            },
            "load_average": spread(load),
        }
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
            cpu = summary.get("cpu_us_per_transaction", {}).get(name)
            if cpu:
                parts = " ".join(f"{part} {value:.0f}" for part, value in cpu.items() if value)
                lines.append(f"  {'':<8} cpu us/transaction: {parts}")
        if "load_average" in summary:
            load = summary["load_average"]
            lines.append(
                f"  load average (1 min) after the rounds: "
                f"{load['min']:.1f}/{load['median']:.1f}/{load['max']:.1f}"
            )
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


# Kinds of process the meter tells apart (by executable name); the rest is "other".
METERED = ("postgres", "pgbouncer", "haproxy")


def process_cpu(pids: Callable[[], Sequence[int]]) -> Callable[[], dict[str, float]]:
    """A meter: CPU seconds (user + system) used so far by the processes ``pids()`` names and
    all their descendants, per METERED kind. A process's ended children count with it (the
    postmaster's for its backends), so a backend that exits between two readings is not
    lost."""

    def meter() -> dict[str, float]:
        totals = dict.fromkeys((*METERED, "other"), 0.0)
        seen: set[int] = set()
        for pid in pids():
            try:
                root = psutil.Process(pid)
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            for proc in family:
                if proc.pid in seen:
                    continue
                seen.add(proc.pid)
                try:
                    name, times = proc.name(), proc.cpu_times()
                except psutil.Error:
                    continue
                kind = name if name in METERED else "other"
                totals[kind] += (
                    times.user + times.system + times.children_user + times.children_system
                )
        return totals

    return meter


BEFORE = {
    "same": "the same poolers as the phase's (to try a setting, or other routers, on them)",
    "one-process": "the same poolers with pooler.processes = 1 (one process, the whole pools)",
    "plaintext-auth": "the same poolers with the password itself in their auth file, as "
    "before the SCRAM verifiers (PgBouncer derives the key at every login, and logs in to "
    "PostgreSQL with the password)",
}


def _start_routers(run: Any, folder: Path, settings: dict[str, list[str]]) -> tuple[str, list[Any]]:
    """The phase's HAProxy routers again, from their own configurations with ``settings``
    added (section -> lines, e.g. {"global": ["nbthread 1"]}), on addresses 127.0.5.x of
    their own; the same members, checked the same way. Returns their read-write DSN (one
    host per router) and the processes."""
    from scaling.local import procs

    routers = [e for e in run.state.processes if e.role == "router"]
    user = "postgres" if procs.running_as_root() else None
    folder.chmod(0o777)
    started, hosts, port = [], [], 0
    for entry in routers:
        text = Path(entry.argv[-1]).read_text().replace("127.0.2.", "127.0.5.")
        for section, lines in settings.items():
            head = f"\n{section}\n"
            if head not in text:
                raise ValueError(f"the router configuration has no {section} section")
            text = text.replace(head, head + "".join(f"    {line}\n" for line in lines), 1)
        config = folder / f"router-{entry.name}.cfg"
        config.write_text(text)
        config.chmod(0o644)
        subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], check=True)
        argv = ["haproxy", "-W", "-db", "-f", str(config)]
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        started.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        hosts.append(entry.host.replace("127.0.2.", "127.0.5."))
        port = entry.port
    # A server counts as up until its first check: give the checks time to find the leader.
    time.sleep(3)
    pg = run.summary["postgres"]
    params = conninfo_to_dict(pg["primary"])
    dsn = make_conninfo(
        **{**params, "host": ",".join(hosts), "port": str(port)}  # type: ignore[arg-type]
    )
    deadline = time.monotonic() + 15
    for one in split_hosts(dsn):
        while True:
            try:
                with psycopg.connect(
                    one, password=run.secrets["postgres-password"], connect_timeout=2
                ) as conn:
                    conn.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    return dsn, started


def _start_before_poolers(
    run: Any, spec: Any, folder: Path, kind: str, extra: str = "", routers: str | None = None
) -> tuple[list[str], list[Any]]:
    """The phase's poolers as BEFORE[kind] says, on addresses of their own, pooling the same
    routers (or ``routers``, a DSN) with the same users; ``extra``: pgbouncer.ini lines added
    to their [pgbouncer] section (a setting to try)."""
    from scaling.local import procs
    from scaling.local.credentials import write_private
    from scaling.local.ports import PortAllocator
    from scaling.model import POOLER_ADMIN_USER
    from scaling.render.endpoints import Endpoint
    from scaling.render.pgbouncer import PoolerLayout, config_name, render_pgbouncer_ini

    processes = 1 if kind == "one-process" else spec.pooler.processes
    before = spec.model_copy(
        update={"pooler": spec.pooler.model_copy(update={"processes": processes})}
    )
    pg = run.summary["postgres"]
    primary = conninfo_to_dict(routers or pg["primary"])
    replicas = conninfo_to_dict(pg["read_only"]) if pg.get("read_only") else None
    hosts = tuple(f"127.0.4.{i + 1}" for i in range(spec.pooler.replicas))
    port = PortAllocator().take(hosts)
    pooler_dir = Path(run.entry("pgbouncer-0").argv[1]).parent
    user = "postgres" if procs.running_as_root() else None
    auth_file = pooler_dir / "userlist.txt"
    if kind == "plaintext-auth":
        auth_file = folder / "plaintext-userlist.txt"
        lines = "".join(
            f'"{name}" "{run.secrets[secret]}"\n'
            for name, secret in (
                (spec.postgres.user, "postgres-password"),
                (POOLER_ADMIN_USER, "pgbouncer-admin-password"),
            )
        )
        uid = 0 if user is None else pwd.getpwnam(user).pw_uid
        write_private(auth_file, lines, uid=uid)
    started, dsns = [], []
    folder.chmod(0o777)
    for i, host in enumerate(hosts):
        for k in range(processes):
            layout = PoolerLayout(
                listen=Endpoint(host, port),
                primary=Endpoint(str(primary["host"]), int(str(primary["port"]).split(",")[0])),
                replica_hosts=tuple(str(replicas["host"]).split(",")) if replicas else (),
                replica_port=int(str(replicas["port"]).split(",")[0]) if replicas else 0,
                auth_file=str(auth_file),
                hba_file=str(pooler_dir / "pgbouncer_hba.conf"),
                client_networks=("127.0.0.0/8",),
                logfile=str(folder / f"before-{i}.{k}.log"),
                pidfile=str(folder / f"before-{i}.{k}.pid"),
            )
            ini = folder / f"before-{i}-{config_name(before, k)}"
            ini.write_text(render_pgbouncer_ini(before, layout, k) + extra)
            argv = ["pgbouncer", str(ini)]
            if user:
                argv = ["runuser", "-u", user, "--", *argv]
            started.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
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
    parser.add_argument("--no-before", action="store_true", help="skip the 'before' poolers")
    parser.add_argument(
        "--before",
        choices=sorted(BEFORE),
        default="one-process",
        help="what the 'before' poolers are",
    )
    parser.add_argument(
        "--router-setting",
        action="append",
        default=[],
        help="'section: line' (e.g. 'global: nbthread 1'): the bench starts routers of its own "
        "with it, measured as 'router-b', and the 'before' poolers pool them",
    )
    parser.add_argument(
        "--before-setting",
        action="append",
        default=[],
        help="a pgbouncer.ini line the 'before' poolers get too, e.g. 'pkt_buf = 8192'",
    )
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
            routes: dict[str, str] = {"router": pg["primary"]} if pg["members"] else {}
            other_routers = None
            if args.router_setting:
                settings: dict[str, list[str]] = {}
                for item in args.router_setting:
                    section, _, line = item.partition(":")
                    settings.setdefault(section.strip(), []).append(line.strip())
                other_routers, before = _start_routers(run, Path(tmp), settings)
                routes["router-b"] = other_routers
            if not args.no_before:
                extra = "".join(f"{line}\n" for line in args.before_setting)
                dsns, started = _start_before_poolers(
                    run, spec, Path(tmp), args.before, extra, other_routers
                )
                before += started
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
                routes=routes or None,
                release=release_idle(
                    superuser, run.secrets["postgres-superuser-password"], spec.postgres.user
                ),
                threads=args.threads,
                meter=process_cpu(
                    lambda: [
                        *(e.pid for e in run.state.processes if e.pid),
                        *(p.pid for p in before),
                    ]
                ),
            )
        finally:
            for proc in before:
                proc.terminate()
                proc.wait(timeout=10)
            run.down()
    print(
        f"{args.stack}: pooler.replicas {spec.pooler.replicas} x processes "
        f"{spec.pooler.processes}, defaultPoolSize {spec.pooler.default_pool_size}; "
        + ("" if args.no_before else f"'before' = {BEFORE[args.before]}")
        + "".join(f"; 'before' with {line!r}" for line in args.before_setting)
        + "".join(f"; 'router-b' with {item!r}" for item in args.router_setting)
        + ("; 'before' pools 'router-b'" if args.router_setting and not args.no_before else "")
    )
    print(report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

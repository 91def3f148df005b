"""The data tier of a local transition, on the processes of `local up` (source and target runs).

PostgreSQL (either side a single PostgreSQL or Patroni; a single target is launch, moved
back to after the cut-over of launch → growth: the same mechanism in reverse):

* prepare-source: a single source has no replication login: the replication role is created
  (its SCRAM verifier, from the source's own ``replication-password``), a ``host replication``
  line for loopback is added to its pg_hba file and the configuration reloaded, as the
  superuser over loopback. A Patroni source has both already; either way a replication
  connection is tried.
* start-target: ``runner.up(..., follow=Follow.of(source))``: the target is a standby cluster
  of the source's read-write door, or a single hot standby whose data directory is a
  pg_basebackup of it (scaling.local.follow); it inherits the source's secrets.
* catch-up: the target's standby leader (or single standby) replays up to the source's
  current LSN (measured).
* freeze-source: ``default_transaction_read_only`` (ALTER SYSTEM + reload) and the
  application's sessions terminated, so clients fail fast and move on.
* final-sync: once the target streams from the source past the freeze LSN (a receiver still
  reconnecting when the source stops would miss its last WAL for good), the source's
  PostgreSQL is stopped gracefully (a Patroni source: replicas
  before the leader, so no failover can follow): no write can follow its shutdown
  checkpoint, whose LSN ``pg_controldata`` reads from the stopped data directory (which
  must say "shut down"); then the target's standby leader must have replayed it.
* promote-target (the cut-over): ``PATCH /config {"standby_cluster": null}`` on the target's
  Patroni REST API, or ``pg_promote()`` on a single standby (then its primary_conninfo is
  reset and its replication password file removed); done when the target's leader (or
  server) is read-write.
* unfreeze-source (rollback before the cut-over): the stopped source servers start again on
  their intact data (the former leader first), read-only is lifted as soon as the writable
  server is back, the Redis pause too; only then are a Patroni source's replicas waited
  for. PgBouncers that kept running through the freeze are restarted one at a time (one
  that logged in meanwhile announces the frozen read-only state to every new client). Once
  the target is torn down, unprepare_source takes a single source's replication login back
  (hba line removed, role NOLOGIN).

Redis:

* a replicating target (Sentinel or standalone): its master replicates the source's master
  from the start; catch-up waits for equal offsets; freeze-source stops the source's
  Sentinels (they would fail over) and issues ``CLIENT PAUSE WRITE``; final-sync waits for
  equal offsets again; promote-target renews the pause, checks the offsets once more, then
  ``REPLICAOF NO ONE`` on the target master, ``REPLICAOF <target master>`` on the source
  master with replica-priority 0 (writes there now fail READONLY, so clients move; the
  source keeps a copy the target's Sentinels never promote; both masters' recorded command
  lines say so, for any later restart),
  ``CLIENT UNPAUSE``, and starts the target's Sentinels.
* a Redis Cluster target starts empty: the keys are copied at catch-up and again under the
  pause at final-sync (``DUMP``/``PTTL`` on the source, ``RESTORE ... REPLACE`` routed to the
  owning master by redis-py's cluster client), then the source master is shut down with
  ``SHUTDOWN SAVE`` (its data kept). ``redis-cli --cluster import`` is not used: its
  ``MIGRATE`` is a write command, which ``CLIENT PAUSE WRITE`` blocks, and it takes the
  source's password on its command line. Keys deleted on the source between the two copies
  stay on the target.

What a step did that a later one (or the rollback) must know is kept in the source's state
dir (:data:`FREEZE_FILE`): the moment each tier stopped taking writes (the downtime is
measured from it), the servers stopped, whether the target was promoted (unfreeze then
refuses: after the cut-over only forward).

Every function takes the runs (scaling.local.runner.LocalRun), returns a dict of measurements
(JSON-serialisable) and raises scaling.transition.errors.StepFailed.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from scaling.local import health, patroni_api, procs, runner
from scaling.local.follow import Follow
from scaling.local.postgres import LOOPBACK_NETWORK, REPLICATION_PASSFILE, parse_controldata
from scaling.local.runner import LocalRun, LocalUpError, patroni_apis
from scaling.local.state import ProcessEntry
from scaling.model import REPLICATION_USER, SUPERUSER, PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.patroni import REST_API_USER
from scaling.render.postgres_start import REPLICATION_ROLE_ATTRIBUTES
from scaling.render.scram import SALT_BYTES, scram_verifier
from scaling.transition.errors import StepFailed

FREEZE_FILE = "transition-freeze.json"
# CLIENT PAUSE WRITE lasts this long unless renewed: should the transition die, the source's
# Redis takes writes again by itself (the rollback also lifts it at once).
PAUSE_MS = 120_000
PROMOTE_TIMEOUT = 60.0
RESTART_TIMEOUT = 90.0
SENTINEL_TIMEOUT = 30.0
COPY_BATCH = 500

Progress = Callable[[str], None]


# ----------------------------------------------------------------------------- helpers


def lsn_int(lsn: str) -> int:
    """``'0/3000060'`` -> its byte position."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def _now() -> float:
    return time.time()


def _freeze_path(source: LocalRun) -> Path:
    return Path(source.state.state_dir) / FREEZE_FILE


def _load_freeze(source: LocalRun) -> dict[str, Any]:
    path = _freeze_path(source)
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def _save_freeze(source: LocalRun, data: dict[str, Any]) -> None:
    path = _freeze_path(source)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _pg_mode(run: LocalRun) -> str:
    return str(run.summary["postgres"]["mode"])  # "single" or "replicated"


def _entries(run: LocalRun, tier: str, *roles: str) -> list[ProcessEntry]:
    return [p for p in run.state.processes if p.tier == tier and (not roles or p.role in roles)]


def _members(run: LocalRun) -> list[ProcessEntry]:
    names = [str(m["name"]) for m in run.summary["postgres"].get("members", [])]
    return [run.entry(name) for name in names]


def _leader_name(run: LocalRun) -> str | None:
    return patroni_api.leader(patroni_api.fetch_cluster(patroni_apis(run.state)))


def _source_primary(run: LocalRun) -> Endpoint:
    """Where the source's writable server listens, directly (not through a router)."""
    if _pg_mode(run) == "single":
        (entry,) = _entries(run, "postgres", "primary")
    else:
        leader = _leader_name(run)
        if leader is None:
            raise LookupError("no Patroni member of the source leads")
        entry = run.entry(leader)
    assert entry.port is not None
    return Endpoint(entry.host, entry.port)


def _target_leader(run: LocalRun) -> tuple[str, Endpoint, str | None]:
    """(name, PostgreSQL endpoint, REST API) of the target's leader (standby leader or not);
    a single PostgreSQL target: its server, and no REST API."""
    if _pg_mode(run) == "single":
        (entry,) = _entries(run, "postgres", "primary")
        assert entry.port is not None
        return entry.name, Endpoint(entry.host, entry.port), None
    leader = _leader_name(run)
    if leader is None:
        raise LookupError("no Patroni member of the target leads")
    entry = run.entry(leader)
    assert entry.port is not None
    apis = {str(m["name"]): str(m["api"]) for m in run.summary["postgres"]["members"]}
    return leader, Endpoint(entry.host, entry.port), apis[leader]


@contextmanager
def _superuser(run: LocalRun, endpoint: Endpoint) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=SUPERUSER,
        password=run.secrets["postgres-superuser-password"],
        dbname="postgres",
        autocommit=True,
        connect_timeout=3,
    )
    try:
        yield conn
    finally:
        conn.close()


def _value(run: LocalRun, endpoint: Endpoint, query: str) -> Any:
    with _superuser(run, endpoint) as conn:
        row = conn.execute(query).fetchone()
        return row[0] if row else None


def _current_lsn(run: LocalRun, endpoint: Endpoint) -> str:
    return str(_value(run, endpoint, "SELECT pg_current_wal_lsn()::text"))


def _replay_lsn(run: LocalRun, endpoint: Endpoint) -> str | None:
    value = _value(run, endpoint, "SELECT pg_last_wal_replay_lsn()::text")
    return None if value is None else str(value)


def _streams_past(run: LocalRun, standby: Endpoint, lsn: str) -> bool:
    """Whether ``standby``'s WAL receiver streams (from the source) and has replayed ``lsn``."""
    with _superuser(run, standby) as conn:
        row = conn.execute(
            "SELECT (SELECT status FROM pg_stat_wal_receiver), pg_last_wal_replay_lsn()::text"
        ).fetchone()
    return bool(row and row[0] == "streaming" and row[1] and lsn_int(row[1]) >= lsn_int(lsn))


def _wait(
    what: str,
    check: Callable[[], bool],
    timeout: float,
    step: str,
    watched: tuple[ProcessEntry, ...] = (),
) -> float:
    """Poll ``check``; a process of ``watched`` that dies fails the step at once (writes are
    stopped meanwhile: waiting out the timeout for a dead target only lengthens that)."""
    try:
        return health.wait_until(what, check, timeout, processes=watched, interval=0.1)
    except (health.HealthTimeout, health.ProcessDied) as error:
        raise StepFailed(step, str(error)) from None


def _redis(endpoint: Endpoint, password: str) -> redis.Redis:
    """A client that never retries by itself: each command of a step is sent once (a
    retried SHUTDOWN would wait out redis-py's backoff against a server that is gone)."""
    return redis.Redis(
        host=endpoint.host,
        port=endpoint.port,
        password=password,
        socket_timeout=5,
        socket_connect_timeout=3,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )


def _replication(endpoint: Endpoint, password: str) -> dict[str, Any]:
    with _redis(endpoint, password) as conn:
        return dict(conn.info("replication"))


def _online_replicas(endpoint: Endpoint, password: str) -> int:
    info = _replication(endpoint, password)
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


def _redis_mode(run: LocalRun) -> str:
    return str(run.summary["redis"]["mode"])


def _target_master(target: LocalRun) -> Endpoint:
    """The target's Redis master as its topology names it (it replicates the source)."""
    (entry,) = _entries(target, "redis", "master", "standalone")
    assert entry.port is not None
    return Endpoint(entry.host, entry.port)


def _cluster_nodes(target: LocalRun) -> list[ClusterNode]:
    nodes = []
    for item in target.summary["redis"]["nodes"]:
        host, _, port = str(item).rpartition(":")
        nodes.append(ClusterNode(host, int(port)))
    return nodes


def _source_redis_master(source: LocalRun, frozen: dict[str, Any]) -> Endpoint:
    recorded = frozen.get("redis", {}).get("master")
    if recorded:
        host, _, port = str(recorded).rpartition(":")
        return Endpoint(host, int(port))
    follow = Follow.of(source)
    if follow.redis_master is None:
        raise LookupError("the source's Redis is a Redis Cluster: no single master to move")
    return follow.redis_master


# ----------------------------------------------------------------------------- prepare


def prepare_source(source: LocalRun) -> dict[str, Any]:
    """Give a single source PostgreSQL the replication login a standby needs (role + pg_hba
    line for loopback, reloaded), then check that a replication connection gets in."""
    step = "prepare-source"
    result: dict[str, Any] = {"postgres_mode": _pg_mode(source), "redis_mode": _redis_mode(source)}
    try:
        primary = _source_primary(source)
        if _pg_mode(source) == "single":
            result |= _add_replication_login(source, primary)
        door = Follow.of(source).postgres
        _try_replication(source, door)
        result["replication_door"] = str(door)
        if _redis_mode(source) != "cluster":
            master = _source_redis_master(source, {})
            result["redis_master"] = str(master)
    except (psycopg.Error, redis.RedisError, LookupError, OSError, RuntimeError) as error:
        raise StepFailed(step, f"{type(error).__name__}: {error}") from None
    return result


def _add_replication_login(source: LocalRun, primary: Endpoint) -> dict[str, Any]:
    verifier = scram_verifier(source.secrets["replication-password"], _salt())
    role = sql.Identifier(REPLICATION_USER)
    with _superuser(source, primary) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (REPLICATION_USER,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {}").format(role))
        # The verifier, never the password, travels in the statement (it may be logged).
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH " + REPLICATION_ROLE_ATTRIBUTES + " PASSWORD {}").format(
                role, sql.Literal(verifier)
            )
        )
        hba_file = Path(str(conn.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]
        line = replication_hba_line()
        text = hba_file.read_text()
        added = line not in text.splitlines()
        if added:
            with hba_file.open("a") as out:
                out.write(("" if text.endswith("\n") else "\n") + line + "\n")
        conn.execute("SELECT pg_reload_conf()")
        errors = conn.execute(
            "SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL"
        ).fetchall()
        if errors:
            raise RuntimeError(f"{hba_file} has errors after the change: {errors}")
    return {"replication_role": "present" if exists else "created", "hba_line_added": added}


def replication_hba_line() -> str:
    """The pg_hba line that admits the replication role from loopback (as the Patroni
    members' rules do, scaling.render.postgres.hba_rules)."""
    return (
        f"{'host':<7} {'replication':<12} {REPLICATION_USER:<13} "
        f"{LOOPBACK_NETWORK:<16} scram-sha-256"
    )


def _salt() -> bytes:
    import secrets

    return secrets.token_bytes(SALT_BYTES)


def _try_replication(source: LocalRun, door: Endpoint) -> None:
    """A physical replication connection through the door the target will use."""
    conn = psycopg.connect(
        host=door.host,
        port=door.port,
        user=REPLICATION_USER,
        password=source.secrets["replication-password"],
        dbname="replication",
        replication="true",
        connect_timeout=5,
        autocommit=True,
    )
    conn.close()


def unprepare_source(source: LocalRun) -> dict[str, Any]:
    """Undo prepare-source on a single source PostgreSQL once no target follows it any more
    (a rollback, after the target is torn down): its loopback replication line removed and
    the replication role NOLOGIN again, as a phase without replicas has it (start-up SQL).
    A Patroni source keeps both: its replicas use them."""
    step = "unprepare-source"
    if _pg_mode(source) != "single":
        return {"postgres_mode": _pg_mode(source), "changed": False}
    try:
        with _superuser(source, _source_primary(source)) as conn:
            hba_file = Path(str(conn.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]
            lines = hba_file.read_text().splitlines()
            kept = [line for line in lines if line != replication_hba_line()]
            if kept != lines:
                hba_file.write_text("\n".join(kept) + "\n")
            conn.execute(
                "DO $$ BEGIN IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = "
                f"'{REPLICATION_USER}') THEN ALTER ROLE {REPLICATION_USER} WITH NOLOGIN; "
                "END IF; END $$"
            )
            conn.execute("SELECT pg_reload_conf()")
    except (psycopg.Error, LookupError, OSError) as error:
        raise StepFailed(step, f"{type(error).__name__}: {error}") from None
    return {"postgres_mode": "single", "hba_line_removed": kept != lines, "changed": True}


# ----------------------------------------------------------------------------- start


def start_target(
    target_spec: PhaseSpec,
    target_stack: str,
    target_state_dir: Path,
    source: LocalRun,
    progress: Progress | None = None,
) -> LocalRun:
    """`local up` of the target as a replica of the running source (scaling.local.follow)."""
    try:
        return runner.up(
            target_spec,
            stack=target_stack,
            state_dir=target_state_dir,
            progress=progress,
            follow=Follow.of(source),
        )
    except (LocalUpError, runner.AlreadyRunning, LookupError, ValueError) as error:
        raise StepFailed("start-target", str(error)) from None


# ----------------------------------------------------------------------------- catch-up


def catch_up(source: LocalRun, target: LocalRun, timeout: float = 120.0) -> dict[str, Any]:
    """Wait until the target has everything the source had when this step began."""
    step = "catch-up"
    started = time.monotonic()
    try:
        result: dict[str, Any] = {"postgres": _pg_catch_up(source, target, timeout, step)}
        if _redis_mode(target) == "cluster":
            result["redis"] = _copy_to_cluster(source, target, {}, step)
        else:
            result["redis"] = _redis_catch_up(source, target, timeout, step)
    except (psycopg.Error, redis.RedisError, LookupError, OSError) as error:
        raise StepFailed(step, f"{type(error).__name__}: {error}") from None
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def _pg_catch_up(source: LocalRun, target: LocalRun, timeout: float, step: str) -> dict[str, Any]:
    primary = _source_primary(source)
    _, leader, _ = _target_leader(target)
    wanted = _current_lsn(source, primary)
    replayed = _replay_lsn(target, leader)
    lag = max(0, lsn_int(wanted) - lsn_int(replayed)) if replayed else None
    waited = _wait(
        f"the target's standby leader streams and replays the source's LSN {wanted}",
        lambda: _streams_past(target, leader, wanted),
        timeout,
        step,
    )
    return {
        "source_lsn": wanted,
        "replayed_lsn_before": replayed,
        "lag_bytes": lag,
        "lag_seconds": round(waited, 3),
    }


def _redis_offsets(
    source_master: Endpoint, target_master: Endpoint, password: str
) -> tuple[int, int, str]:
    """(source master offset, offset the target master has processed, its link status)."""
    source = _replication(source_master, password)
    target = _replication(target_master, password)
    return (
        int(source.get("master_repl_offset", 0)),
        int(target.get("slave_repl_offset", -1)),
        str(target.get("master_link_status", "down")),
    )


def _redis_catch_up(
    source: LocalRun, target: LocalRun, timeout: float, step: str
) -> dict[str, Any]:
    password = source.secrets["redis-password"]
    master, replica = _source_redis_master(source, {}), _target_master(target)
    wanted, had, _ = _redis_offsets(master, replica, password)

    def caught_up() -> bool:
        _, offset, link = _redis_offsets(master, replica, password)
        return link == "up" and offset >= wanted

    waited = _wait(f"the target's Redis master reaches offset {wanted}", caught_up, timeout, step)
    return {
        "source_offset": wanted,
        "target_offset_before": had,
        "lag_bytes": max(0, wanted - had) if had >= 0 else None,
        "lag_seconds": round(waited, 3),
    }


def _copy_to_cluster(
    source: LocalRun, target: LocalRun, frozen: dict[str, Any], step: str
) -> dict[str, Any]:
    """Every key of the source master's database 0, with its TTL, into the target cluster
    (``RESTORE ... REPLACE`` on the master owning the key's slot)."""
    password = source.secrets["redis-password"]
    master = _source_redis_master(source, frozen)
    started = time.monotonic()
    copied = skipped = 0
    src = _redis(master, password)
    src_raw = redis.Redis(host=master.host, port=master.port, password=password, socket_timeout=10)
    dst = RedisCluster(
        startup_nodes=_cluster_nodes(target),
        password=target.secrets["redis-password"],
        socket_timeout=10,
    )
    try:
        batch: list[bytes] = []

        def flush() -> tuple[int, int]:
            pipe = src_raw.pipeline(transaction=False)
            for key in batch:
                pipe.dump(key)
                pipe.pttl(key)
            replies = pipe.execute()
            out = dst.pipeline()
            done = gone = 0
            for index, key in enumerate(batch):
                payload, ttl = replies[2 * index], replies[2 * index + 1]
                if payload is None or ttl == -2:
                    gone += 1  # expired or deleted meanwhile
                    continue
                out.restore(key, max(0, int(ttl)), payload, replace=True)
                done += 1
            out.execute()
            return done, gone

        for key in src_raw.scan_iter(count=COPY_BATCH):
            batch.append(key)
            if len(batch) >= COPY_BATCH:
                done, gone = flush()
                copied, skipped, batch = copied + done, skipped + gone, []
        if batch:
            done, gone = flush()
            copied, skipped = copied + done, skipped + gone
        source_keys = int(src.dbsize())
    finally:
        src.close()
        src_raw.close()
        dst.close()
    return {
        "keys_copied": copied,
        "keys_gone_meanwhile": skipped,
        "source_keys": source_keys,
        "copy_seconds": round(time.monotonic() - started, 3),
    }


# ----------------------------------------------------------------------------- freeze


def freeze_source(source: LocalRun) -> dict[str, Any]:
    """Stop writes on the source: PostgreSQL read-only (and the application's sessions
    ended), the source's Sentinels stopped, Redis writes paused."""
    step = "freeze-source"
    frozen = _load_freeze(source)
    if frozen.get("promoted"):
        raise StepFailed(step, "the target was already promoted from this source")
    try:
        primary = _source_primary(source)
        leader = None if _pg_mode(source) == "single" else _leader_name(source)
        frozen.setdefault("redis", {"sentinels_stopped": []})
        # First (writes still flow): a Sentinel would fail the paused, later demoted or
        # stopped, master over.
        _stop_sentinels(source, frozen)
        frozen["postgres"] = {"leader": leader, "stopped": []}
        _save_freeze(source, frozen)  # before any change: the rollback reads it
        replicas_stopped = _stop_source_replicas(source, frozen, leader, step)
        frozen["postgres"]["frozen_at"] = _now()
        _save_freeze(source, frozen)
        app_user = str(source.summary["database"]["user"])
        with _superuser(source, primary) as conn:
            conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.execute("SELECT pg_reload_conf()")
            ended = conn.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE usename = %s AND pid <> pg_backend_pid()",
                (app_user,),
            ).fetchone()
            lsn = str(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])  # type: ignore[index]
        frozen["postgres"]["lsn"] = lsn
        result: dict[str, Any] = {
            "lsn": lsn,
            "sessions_terminated": int(ended[0]) if ended else 0,
            "postgres_leader": leader,
            "replicas_stopped_first": replicas_stopped,
            "writes_stopped_at": frozen["postgres"]["frozen_at"],
        }
        if _redis_mode(source) != "cluster":
            result |= _pause_redis(source, frozen)
        _save_freeze(source, frozen)
    except (psycopg.Error, redis.RedisError, LookupError, OSError) as error:
        raise StepFailed(step, f"{type(error).__name__}: {error}") from None
    return result


def _stop_source_replicas(
    source: LocalRun, frozen: dict[str, Any], leader: str | None, step: str
) -> list[str]:
    """A Patroni source's replicas stop before its writes do: with none left, nothing can
    fail over and take writes once the leader stops (final-sync), and the write stop then
    holds the leader's shutdown alone. The leader serves writes meanwhile (asynchronous
    replication; under synchronous_mode its commits wait for a standby, so writes stop
    here already); reads through the replica door pause. Unfreeze starts them again."""
    if leader is None:
        return []
    replicas = [e for e in _members(source) if e.name != leader and procs.alive(e)]
    frozen["postgres"]["stopped"] += [e.name for e in replicas]
    _save_freeze(source, frozen)  # recorded first: the rollback starts them again
    with ThreadPoolExecutor(max_workers=max(1, len(replicas))) as pool:
        _wait_down(replicas, {e.name: pool.submit(procs.stop, e) for e in replicas}, step)
    return [e.name for e in replicas]


def _stop_sentinels(source: LocalRun, frozen: dict[str, Any]) -> None:
    running = [e for e in _entries(source, "redis", "sentinel") if procs.alive(e)]
    frozen["redis"]["sentinels_stopped"] += [e.name for e in running]
    _save_freeze(source, frozen)  # recorded first: the rollback starts them again
    with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
        list(pool.map(procs.stop, running))


def _pause_redis(source: LocalRun, frozen: dict[str, Any]) -> dict[str, Any]:
    password = source.secrets["redis-password"]
    master = _source_redis_master(source, {})
    frozen["redis"]["master"] = str(master)
    _save_freeze(source, frozen)
    with _redis(master, password) as conn:
        conn.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
        frozen["redis"]["paused_at"] = _now()
        offset = int(conn.info("replication")["master_repl_offset"])
    frozen["redis"]["offset"] = offset
    return {
        "redis_offset": offset,
        "redis_master": str(master),
        "sentinels_stopped": frozen["redis"]["sentinels_stopped"],
    }


# ----------------------------------------------------------------------------- final sync


def final_sync(source: LocalRun, target: LocalRun, timeout: float = 60.0) -> dict[str, Any]:
    """Make sure the target holds every write the source acknowledged: the source's
    PostgreSQL stopped gracefully, the target replayed its final checkpoint; Redis offsets
    equal (or, for a Redis Cluster target, the keys copied again and the source master
    shut down with SAVE)."""
    step = "final-sync"
    frozen = _load_freeze(source)
    if "postgres" not in frozen:
        raise StepFailed(step, "the source was not frozen (freeze-source did not run)")
    started = time.monotonic()
    try:
        result: dict[str, Any] = {"postgres": _pg_final_sync(source, target, frozen, timeout, step)}
        if _redis_mode(target) == "cluster":
            result["redis"] = _cluster_final_sync(source, target, frozen, step)
        elif frozen.get("redis", {}).get("master"):
            result["redis"] = _redis_final_sync(source, target, frozen, timeout, step)
    except (psycopg.Error, redis.RedisError, LookupError, OSError, RuntimeError) as error:
        if isinstance(error, StepFailed):
            raise
        raise StepFailed(step, f"{type(error).__name__}: {error}") from None
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def _stop_order(source: LocalRun, leader: str | None) -> list[ProcessEntry]:
    """The source's PostgreSQL servers in the order they stop: replicas, then the leader."""
    if _pg_mode(source) == "single":
        return _entries(source, "postgres", "primary")
    members = _members(source)
    return sorted(members, key=lambda e: e.name == leader)


def _data_dir(entry: ProcessEntry) -> str:
    """A server's data directory: recorded for a plain PostgreSQL, the member's folder's
    ``data`` under Patroni (scaling.local.patroni.member_layout)."""
    if entry.data_dir:
        return entry.data_dir
    assert entry.cwd is not None
    return str(Path(entry.cwd) / "data")


STOP_TIMEOUT = 90.0


def _pg_down(entry: ProcessEntry) -> bool:
    """Whether a server's PostgreSQL is down: its postmaster gone, or pg_control saying it
    shut down (a primary's last checkpoint is written; a standby can no longer be promoted)."""
    data = Path(_data_dir(entry))
    if not (data / "postmaster.pid").exists():
        return True
    return controldata(str(data)).get("Database cluster state", "").startswith("shut down")


def _wait_down(entries: list[ProcessEntry], stops: dict[str, Future[str]], step: str) -> None:
    def down() -> bool:
        for entry in entries:
            stop = stops[entry.name]
            if stop.done() and stop.result() == "still running":
                raise StepFailed(step, f"the source's {entry.name} could not be stopped")
        return all(_pg_down(e) for e in entries)

    names = ", ".join(e.name for e in entries)
    try:
        health.wait_until(
            f"the source's PostgreSQL down on {names}", down, STOP_TIMEOUT, interval=0.1
        )
    except health.HealthTimeout as error:
        raise StepFailed(step, str(error)) from None


def controldata(data_dir: str) -> dict[str, str]:
    """pg_controldata of a data directory, run as the account that owns it."""
    user = "postgres" if procs.running_as_root() else None
    result = procs.run_tool([procs.pg_bin("pg_controldata"), "-D", data_dir], user=user, timeout=30)
    return parse_controldata(result.stdout)


def _pg_final_sync(
    source: LocalRun, target: LocalRun, frozen: dict[str, Any], timeout: float, step: str
) -> dict[str, Any]:
    pg = frozen["postgres"]
    leader = pg.get("leader")
    target_name, target_leader, _ = _target_leader(target)
    watched = (target.entry(target_name),)
    # The final checkpoint reaches the target only through a live stream: a standby whose
    # receiver is still reconnecting (after an unfreeze, say) when the source stops would
    # miss it for good. So: streaming, and past the freeze, before anything stops.
    _wait(
        f"the target streams from the source past the freeze LSN {pg['lsn']}",
        lambda: _streams_past(target, target_leader, str(pg["lsn"])),
        timeout,
        step,
        watched,
    )
    order = _stop_order(source, leader)
    *replicas, last = order
    stops: dict[str, str] = {}
    # Recorded before they stop: the rollback starts them again.
    pg["stopped"] += [e.name for e in order if procs.alive(e) and e.name not in pg["stopped"]]
    _save_freeze(source, frozen)
    # The replicas together, then the leader: with no replica left, nothing can fail over
    # to one and take writes. A step waits for each server's PostgreSQL to be down, not for
    # its Patroni to exit (which takes a few more seconds, left to finish meanwhile: a
    # Patroni that is shutting down never starts its PostgreSQL again).
    timings: dict[str, float] = {}
    began = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=len(order))
    futures = {e.name: pool.submit(procs.stop, e) for e in replicas}
    _wait_down(replicas, futures, step)
    timings.update({e.name: round(time.monotonic() - began, 3) for e in replicas})
    futures[last.name] = pool.submit(procs.stop, last)
    _wait_down([last], futures, step)
    timings[last.name] = round(time.monotonic() - began, 3)
    pool.shutdown(wait=False)
    stops = {name: f.result() if f.done() else "exiting" for name, f in futures.items()}
    stopped_at = _now()
    poolers = _stop_poolers(source, frozen)
    control = controldata(_data_dir(last))
    state = control.get("Database cluster state", "?")
    if state != "shut down":
        raise StepFailed(
            step,
            f"the source's {last.name} did not shut down cleanly (pg_controldata says "
            f"{state!r}; stops: {stops}): its last writes may not have reached the target",
        )
    final = control["Latest checkpoint location"]
    pg["final_lsn"] = final
    _save_freeze(source, frozen)
    replayed: list[str] = []

    def replayed_final() -> bool:
        lsn = _replay_lsn(target, target_leader)
        replayed[:] = [lsn] if lsn else []
        return lsn is not None and lsn_int(lsn) >= lsn_int(final)

    waited = _wait(
        f"the target's standby leader replays the source's final checkpoint {final}",
        replayed_final,
        timeout,
        step,
        watched,
    )
    return {
        "stopped": stops,
        "poolers_stopped": poolers,
        "final_lsn": final,
        "replayed_lsn": replayed[0] if replayed else None,
        "freeze_lsn": pg.get("lsn"),
        "replay_wait_seconds": round(waited, 3),
        "stop_seconds": timings,
        "stopped_after_freeze_seconds": round(stopped_at - float(pg["frozen_at"]), 3),
    }


def _stop_poolers(source: LocalRun, frozen: dict[str, Any]) -> list[str]:
    """Stop the source's PgBouncers once its PostgreSQL is down: they have nothing left to
    serve, and a client with a multi-host URL must be refused at once to try the next host.
    Running, they accept it and queue it until their server-connect timeout, because a
    pooler does not tell libpq its server is read-only (target_session_attrs=read-write
    picked the frozen source's pooler, then waited ~5 s in its queue). Stateless: unfreeze
    starts them again."""
    pg = frozen["postgres"]
    running = [e for e in _entries(source, "postgres", "pooler") if procs.alive(e)]
    pg["poolers_stopped"] = [*pg.get("poolers_stopped", []), *(e.name for e in running)]
    _save_freeze(source, frozen)  # recorded first: the rollback starts them again
    with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
        list(pool.map(procs.stop, running))
    return [e.name for e in running]


def _redis_final_sync(
    source: LocalRun, target: LocalRun, frozen: dict[str, Any], timeout: float, step: str
) -> dict[str, Any]:
    password = source.secrets["redis-password"]
    master = _source_redis_master(source, frozen)
    replica = _target_master(target)
    wanted, offset, waited = _level_under_pause(
        master, replica, _entry_at(target, replica), password, timeout, step
    )
    return {"source_offset": wanted, "target_offset": offset, "wait_seconds": round(waited, 3)}


def _level_under_pause(
    master: Endpoint,
    replica: Endpoint,
    replica_process: ProcessEntry,
    password: str,
    timeout: float,
    step: str,
) -> tuple[int, int, float]:
    """Renew the source master's write pause, then wait until ``replica`` has its offset:
    (the source's offset, the replica's, seconds waited). Under the pause the offsets stand
    still, so a replica that reaches it holds every acknowledged write."""
    with _redis(master, password) as conn:
        conn.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    offsets: list[int] = []

    def level() -> bool:
        wanted, offset, link = _redis_offsets(master, replica, password)
        offsets[:] = [wanted, offset]
        return link == "up" and offset >= wanted

    waited = _wait(
        "the target's Redis master reaches the source's offset",
        level,
        timeout,
        step,
        (replica_process,),
    )
    return offsets[0], offsets[1], waited


def _cluster_final_sync(
    source: LocalRun, target: LocalRun, frozen: dict[str, Any], step: str
) -> dict[str, Any]:
    """Under the pause (renewed): the keys copied again, then the source master shut down
    with SAVE, so no write can land on it after the copy."""
    password = source.secrets["redis-password"]
    if not frozen.get("redis", {}).get("master"):
        raise StepFailed(step, "the source's Redis was not paused (freeze-source)")
    master = _source_redis_master(source, frozen)
    with _redis(master, password) as conn:
        conn.execute_command("CLIENT", "PAUSE", PAUSE_MS, "WRITE")
    copied = _copy_to_cluster(source, target, frozen, step)
    entry = _entry_at(source, master)
    frozen["redis"]["shut_down"] = entry.name
    _save_freeze(source, frozen)
    began = time.monotonic()
    # The server closes the connection as it exits.
    with _redis(master, password) as conn, contextlib.suppress(redis.ConnectionError):
        conn.execute_command("SHUTDOWN", "SAVE")
    # Gone once it refuses connections (its process may take a moment more to exit).
    _wait(
        f"{entry.name} stops answering",
        lambda: not _answers_ping(master, password),
        30.0,
        step,
    )
    return {
        **copied,
        "source_master_shut_down": entry.name,
        "shutdown_seconds": round(time.monotonic() - began, 3),
    }


def _answers_ping(endpoint: Endpoint, password: str) -> bool:
    try:
        with _redis(endpoint, password) as conn:
            return bool(conn.ping())
    except redis.RedisError:
        return False


def _entry_at(run: LocalRun, endpoint: Endpoint) -> ProcessEntry:
    for entry in run.state.processes:
        if entry.host == endpoint.host and entry.port == endpoint.port:
            return entry
    raise LookupError(f"no process of {run.state.stack} listens on {endpoint}")


# ----------------------------------------------------------------------------- promote


def promote_target(source: LocalRun, target: LocalRun) -> dict[str, Any]:
    """THE CUT-OVER: the target's standby cluster becomes a primary cluster, its Redis
    master stops replicating the source (whose master now replicates it) and its Sentinels
    start. After this step only forward."""
    step = "promote-target"
    frozen = _load_freeze(source)
    if "final_lsn" not in frozen.get("postgres", {}):
        raise StepFailed(step, "final-sync did not complete: promoting could lose writes")
    result: dict[str, Any] = {}
    downtime: dict[str, float] = {}
    try:
        result["postgres"] = _promote_postgres(target, step)
        promoted_at = _now()
        downtime["postgres"] = round(promoted_at - float(frozen["postgres"]["frozen_at"]), 3)
        frozen["promoted"] = promoted_at
        _save_freeze(source, frozen)
        if _redis_mode(target) == "cluster":
            result["redis"] = {"mode": "cluster", "promotion": "none needed"}
            paused_at = frozen.get("redis", {}).get("paused_at")
            if paused_at:
                downtime["redis"] = round(_now() - float(paused_at), 3)
        elif frozen.get("redis", {}).get("master"):
            result["redis"] = _promote_redis(source, target, frozen, step)
            downtime["redis"] = round(
                float(result["redis"]["promoted_at"]) - float(frozen["redis"]["paused_at"]), 3
            )
    except (psycopg.Error, redis.RedisError, LookupError, OSError, httpx.HTTPError) as error:
        raise StepFailed(step, f"{type(error).__name__}: {error}") from None
    result["write_downtime_seconds"] = downtime
    return result


def _promote_postgres(target: LocalRun, step: str) -> dict[str, Any]:
    name, leader, api = _target_leader(target)
    if api is None:
        return _promote_single(target, name, leader, step)
    started = time.monotonic()
    response = httpx.patch(
        f"{api}/config",
        json={"standby_cluster": None},
        auth=(REST_API_USER, target.secrets["patroni-api-password"]),
        timeout=10,
    )
    if response.status_code != 200:
        raise StepFailed(
            step, f"PATCH {api}/config answered {response.status_code}: {response.text}"
        )

    def writable() -> bool:
        cluster = patroni_api.fetch_cluster(patroni_apis(target.state))
        roles = {m["name"]: m["role"] for m in patroni_api.members(cluster or {})}
        if roles.get(name) != "leader":
            return False
        return _value(target, leader, "SELECT NOT pg_is_in_recovery()") is True

    waited = _wait(f"{name} leads a read-write cluster", writable, PROMOTE_TIMEOUT, step)
    return {
        "leader": name,
        "promote_seconds": round(time.monotonic() - started, 3),
        "writable_after_seconds": round(waited, 3),
        "timeline": _timeline(target, leader),
    }


def _timeline(run: LocalRun, server: Endpoint) -> int:
    """The timeline a primary writes on (its WAL file name's first 8 hex digits)."""
    wal_file = str(_value(run, server, "SELECT pg_walfile_name(pg_current_wal_lsn())"))
    return int(wal_file[:8], 16)


def _promote_single(target: LocalRun, name: str, server: Endpoint, step: str) -> dict[str, Any]:
    """A single standby ends its recovery (``pg_promote()``, waiting for it); then it no
    longer needs to reach the source: primary_conninfo reset, the password file removed.
    Run again after the promotion, it only checks and tidies."""
    started = time.monotonic()
    with _superuser(target, server) as conn:
        in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        if in_recovery and in_recovery[0]:
            row = conn.execute("SELECT pg_promote(true, %s)", (int(PROMOTE_TIMEOUT),)).fetchone()
            if not (row and row[0]):
                raise StepFailed(step, f"pg_promote() on {name} did not finish in time")

    def writable() -> bool:
        return _value(target, server, "SELECT NOT pg_is_in_recovery()") is True

    waited = _wait(f"{name} is read-write", writable, PROMOTE_TIMEOUT, step)
    with _superuser(target, server) as conn:
        conn.execute("ALTER SYSTEM RESET primary_conninfo")
        conn.execute("SELECT pg_reload_conf()")
    entry = target.entry(name)
    if entry.cwd:
        (Path(entry.cwd) / REPLICATION_PASSFILE).unlink(missing_ok=True)
    return {
        "server": name,
        "promote_seconds": round(time.monotonic() - started, 3),
        "writable_after_seconds": round(waited, 3),
        "timeline": _timeline(target, server),
    }


def _promote_redis(
    source: LocalRun, target: LocalRun, frozen: dict[str, Any], step: str
) -> dict[str, Any]:
    password = source.secrets["redis-password"]
    master = _source_redis_master(source, frozen)
    new = _target_master(target)
    # Checked again at promotion: never promote a master that is behind.
    wanted, offset, _ = _level_under_pause(
        master, new, _entry_at(target, new), password, 10.0, step
    )
    with _redis(new, password) as conn:
        conn.execute_command("REPLICAOF", "NO", "ONE")
    promoted_at = _now()
    with _redis(master, password) as conn:
        # A copy, never a candidate: the target's Sentinels must not promote it.
        conn.config_set("replica-priority", 0)
        conn.execute_command("REPLICAOF", new.host, str(new.port))
        conn.execute_command("CLIENT", "UNPAUSE")
    # What each master starts as from now on: restarted with its first command line, the
    # target's would replicate the old source again (a full resync replaces its data), the
    # source's would come back as a second master.
    set_replicaof(target, _entry_at(target, new), None)
    set_replicaof(source, _entry_at(source, master), new)
    sentinels = _start_sentinels(target, new, step)
    return {
        "source_offset": wanted,
        "target_offset": offset,
        "promoted_at": promoted_at,
        "source_now_replica_of": str(new),
        "sentinels_started": sentinels,
    }


def replicaof_argv(argv: list[str], master: Endpoint | None) -> list[str]:
    """``argv`` of a Redis server without its ``--replicaof host port``, plus one for
    ``master`` when given."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
        elif arg == "--replicaof":
            skip = 2
        else:
            out.append(arg)
    return out + (["--replicaof", master.host, str(master.port)] if master else [])


def set_replicaof(run: LocalRun, entry: ProcessEntry, master: Endpoint | None) -> None:
    entry.argv = replicaof_argv(entry.argv, master)
    run.state.save()


def _start_sentinels(target: LocalRun, master: Endpoint, step: str) -> list[str]:
    from scaling.local.redis import unstarted_sentinels

    entries = unstarted_sentinels(target.state.processes)
    for entry in entries:
        target.start_process(entry.name)
    if not entries:
        return []
    password = target.secrets["redis-password"]
    name = str(target.summary["redis"]["master_name"])

    def converged() -> bool:
        for entry in entries:
            assert entry.port is not None
            with _redis(Endpoint(entry.host, entry.port), password) as conn:
                view = conn.execute_command("SENTINEL", "MASTER", name)
            fields = (
                view if isinstance(view, dict) else dict(zip(view[::2], view[1::2], strict=True))
            )
            if (
                f"{fields.get('ip')}:{fields.get('port')}" != str(master)
                or int(fields.get("num-other-sentinels", 0)) != len(entries) - 1
                or "s_down" in str(fields.get("flags", ""))
            ):
                return False
        return True

    _wait("the target's Sentinels agree on its master", converged, SENTINEL_TIMEOUT, step)
    return [e.name for e in entries]


# ----------------------------------------------------------------------------- rollback


def unfreeze_source(source: LocalRun) -> dict[str, Any]:
    """Before the cut-over only: the source serves writes again, as it did before
    freeze-source (servers final-sync stopped started again on their intact data, read-only
    lifted, the Redis pause lifted, its Sentinels started again)."""
    step = "unfreeze-source"
    frozen = _load_freeze(source)
    if frozen.get("promoted"):
        raise StepFailed(
            step,
            "the target was promoted from this source (the cut-over): the source is not "
            "unfrozen, which would make two writable copies; go forward",
        )
    started = time.monotonic()
    result: dict[str, Any] = {}
    try:
        result["postgres"] = _unfreeze_postgres(source, frozen, step)
        result["redis"] = _unfreeze_redis(source, frozen, step)
        result["writable_after_seconds"] = round(time.monotonic() - started, 3)
        # Writes flow again; only then is the whole Patroni cluster waited for (its
        # replicas, stopped first at freeze-source, rejoin meanwhile).
        result["postgres"]["cluster_healthy_after_seconds"] = _wait_source_cluster(
            source, frozen, step, started
        )
    except (psycopg.Error, redis.RedisError, LookupError, OSError, RuntimeError) as error:
        if isinstance(error, StepFailed):
            raise
        raise StepFailed(step, f"{type(error).__name__}: {error}") from None
    _freeze_path(source).unlink(missing_ok=True)
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def _unfreeze_postgres(source: LocalRun, frozen: dict[str, Any], step: str) -> dict[str, Any]:
    pg = frozen.get("postgres", {})
    stopped = list(pg.get("stopped", []))
    leader = pg.get("leader")
    # The former leader first (it has the latest WAL and takes the leader key), then the rest.
    for name in sorted(stopped, key=lambda n: n != leader):
        entry = source.entry(name)
        # A Patroni final-sync stopped may still be on its way out.
        _wait(f"{name} exits", lambda e=entry: not procs.alive(e), RESTART_TIMEOUT, step)  # type: ignore[misc]
        source.start_process(name)
        if name == stopped[0] or name == leader:
            _wait_source_writable_server(source, step)
    primary = _source_primary(source)
    with _superuser(source, primary) as conn:
        conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        conn.execute("SELECT pg_reload_conf()")
    # A new session sees the reloaded default.
    read_only = _value(source, primary, "SHOW default_transaction_read_only")
    if read_only != "off":
        raise StepFailed(
            step, f"default_transaction_read_only is still {read_only!r} on the source"
        )
    poolers = list(pg.get("poolers_stopped", []))
    for name in poolers:
        entry = source.entry(name)
        _wait(f"{name} exits", lambda e=entry: not procs.alive(e), RESTART_TIMEOUT, step)  # type: ignore[misc]
        source.start_process(name)
    for name in poolers:
        entry = source.entry(name)
        _wait(
            f"{name} serves the application's database",
            lambda e=entry: _pooler_answers(source, e),  # type: ignore[misc]
            RESTART_TIMEOUT,
            step,
        )
    refreshed = _refresh_poolers(source, poolers, step) if "frozen_at" in pg else []
    return {
        "restarted": stopped,
        "poolers_restarted": poolers,
        "poolers_refreshed": refreshed,
        "read_only": read_only,
    }


def _refresh_poolers(source: LocalRun, restarted: list[str], step: str) -> list[str]:
    """Restart, one at a time, the source's PgBouncers that kept running through the freeze.
    A PgBouncer hands every new client the server parameters it cached from a server login
    (PgBouncer issue #859): one that logged in while the source was read-only goes on
    announcing ``default_transaction_read_only=on``, and libpq's
    ``target_session_attrs=read-write`` then refuses a writable source. Restarted, it logs
    in afresh; one at a time, the others sharing its port keep serving."""
    refreshed = []
    for entry in _entries(source, "postgres", "pooler"):
        if entry.name in restarted or not procs.alive(entry):
            continue
        procs.stop(entry)
        source.start_process(entry.name)
        _wait(
            f"{entry.name} serves the application's database",
            lambda e=entry: _pooler_answers(source, e),  # type: ignore[misc]
            RESTART_TIMEOUT,
            step,
        )
        refreshed.append(entry.name)
    return refreshed


def _wait_source_cluster(
    source: LocalRun, frozen: dict[str, Any], step: str, started: float
) -> float | None:
    """A Patroni source whose servers were stopped: wait until its leader and every replica
    stream again; seconds since the unfreeze began (None: nothing to wait for)."""
    if _pg_mode(source) == "single" or not frozen.get("postgres", {}).get("stopped"):
        return None
    names = [e.name for e in _members(source)]
    _wait(
        "the source's Patroni leader and its streaming replicas",
        lambda: patroni_api.healthy(patroni_api.fetch_cluster(patroni_apis(source.state)), names),
        RESTART_TIMEOUT,
        step,
    )
    return round(time.monotonic() - started, 3)


def _pooler_answers(run: LocalRun, pooler: ProcessEntry) -> bool:
    database = run.summary["database"]
    with psycopg.connect(
        host=pooler.host,
        port=pooler.port,
        user=str(database["user"]),
        password=run.secrets["postgres-password"],
        dbname=str(database["name"]),
        connect_timeout=3,
        autocommit=True,
    ) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


def _wait_source_writable_server(source: LocalRun, step: str) -> None:
    def up() -> bool:
        return _value(source, _source_primary(source), "SELECT NOT pg_is_in_recovery()") is True

    _wait("the source's PostgreSQL accepts connections as a primary", up, RESTART_TIMEOUT, step)


def _unfreeze_redis(source: LocalRun, frozen: dict[str, Any], step: str) -> dict[str, Any]:
    found = frozen.get("redis") or {}
    password = source.secrets["redis-password"]
    restarted: list[str] = []
    result: dict[str, Any] = {"restarted": restarted}
    if found.get("master"):
        master = _source_redis_master(source, frozen)
        shut = found.get("shut_down")
        if shut and not procs.alive(source.entry(shut)):
            source.start_process(shut)
            restarted.append(shut)
            _wait(
                f"{shut} answers PING",
                lambda: _answers_ping(master, password),
                30.0,
                step,
            )
        with _redis(master, password) as conn:
            conn.execute_command("CLIENT", "UNPAUSE")
            wanted = int(conn.config_get("min-replicas-to-write").get("min-replicas-to-write", 0))
        if restarted and wanted:
            # It refuses writes until that many replicas are back in sync with it.
            _wait(
                f"{wanted} replica(s) of the restarted {shut} online",
                lambda: _online_replicas(master, password) >= wanted,
                60.0,
                step,
            )
        result["unpaused"] = str(master)
    for name in found.get("sentinels_stopped", []):
        if not procs.alive(source.entry(name)):
            source.start_process(name)
            restarted.append(name)
    return result


__all__ = [
    "FREEZE_FILE",
    "catch_up",
    "final_sync",
    "freeze_source",
    "prepare_source",
    "promote_target",
    "start_target",
    "unfreeze_source",
    "unprepare_source",
]

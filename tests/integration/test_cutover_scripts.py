"""The Docker cut-over's guard scripts (scaling/render/cutover.py) on real servers.

The cheapest real pair: the local runner's launch (a plain PostgreSQL, a standalone Redis)
and a trimmed growth started as its replica (a Patroni standby cluster of two members, a
Redis master replicating launch's). The scripts are the text the Docker stack runs, with
the hosts and ports of loopback in place of container names. Writers keep inserting rows
(each acknowledged by its autocommit) and setting keys on the source throughout.

Covered: refusal with an unreachable target and with a target that does not catch up
(replay paused on its standby leader: the source is frozen, then given its writes back);
the promotion, every acknowledged row and key present on the target; a second run that
finds the work done; Kubernetes's standby guard (the same freeze, SQL in place of the REST
API); a Patroni source (growth, its read-write door a router) with a growth standby cluster
of it. Not covered here: the containers themselves (no Docker on this machine).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis

from scaling.local import LocalRun, runner
from scaling.local.follow import Follow
from scaling.model import SUPERUSER
from scaling.render.cutover import (
    postgres_cutover_script,
    redis_cutover_script,
    standby_guard_script,
)
from scaling.render.endpoints import Endpoint
from scaling.render.patroni import REST_API_USER, RESTAPI_PASSWORD_ENV
from scaling.transition import local_data

pytestmark = pytest.mark.integration

TABLE = "cutover_rows"
LAUNCH = "config:\n  sikka:phase: launch\n  sikka:platform: docker\n"
# Growth as small as Patroni allows: two members, one pooler, one Redis replica.
GROWTH = """\
config:
  sikka:phase: growth
  sikka:platform: docker
  sikka:postgres:
    readReplicas: 1
  sikka:pooler:
    replicas: 1
    processes: 1
  sikka:redis:
    replicas: 1
  sikka:gateway:
    replicas: 1
    maxReplicas: 1
    connectionsPerReplica: 2000
"""
CLOSED = "127.0.0.1:9"  # nothing listens on the discard port


@dataclass
class Writer:
    """Rows (or keys) with a sequence number from a thread; only acknowledged ones count."""

    write: Any  # callable(seq) raising on failure
    acked: list[int] = field(default_factory=list)
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _seq: int = 0

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self._seq += 1
            try:
                self.write(self._seq)
                self.acked.append(self._seq)
            except Exception:  # refused while frozen: not acknowledged
                self.failed += 1
                time.sleep(0.05)
            time.sleep(0.005)

    def stop(self) -> list[int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        return self.acked


def row_writer(url: str, password: str) -> Writer:
    local = threading.local()

    def write(seq: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None or conn.closed:
            conn = local.conn = psycopg.connect(
                url, password=password, autocommit=True, connect_timeout=3
            )
        try:
            conn.execute(f"INSERT INTO {TABLE} (seq) VALUES (%s)", (seq,))
        except psycopg.Error:
            conn.close()
            raise

    return Writer(write)


def key_writer(master: Endpoint, password: str) -> Writer:
    conn = redis.Redis(master.host, master.port, password=password, socket_timeout=5)

    def write(seq: int) -> None:
        assert conn.set(f"cutover:{seq}", seq)

    return Writer(write)


@dataclass
class Pair:
    launch: LocalRun
    growth: LocalRun

    @property
    def source(self) -> Endpoint:
        return Follow.of(self.launch).postgres

    @property
    def apis(self) -> list[str]:
        return [
            m["api"].removeprefix("http://") for m in self.growth.summary["postgres"]["members"]
        ]

    @property
    def redis_source(self) -> Endpoint:
        master = Follow.of(self.launch).redis_master
        assert master is not None
        return master

    @property
    def redis_target(self) -> Endpoint:
        entry = self.growth.entry("redis-0")
        assert entry.port is not None
        return Endpoint(entry.host, entry.port)

    def superuser(self, endpoint: Endpoint, dbname: str = "sikka") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=endpoint.host,
            port=endpoint.port,
            user=SUPERUSER,
            password=self.launch.secrets["postgres-superuser-password"],
            dbname=dbname,
            autocommit=True,
            connect_timeout=5,
        )

    def member(self, index: int) -> Endpoint:
        entry = self.growth.entry(f"postgres-{index}")
        assert entry.port is not None
        return Endpoint(entry.host, entry.port)

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "POSTGRES_PASSWORD": self.launch.secrets["postgres-superuser-password"],
            RESTAPI_PASSWORD_ENV: self.growth.secrets["patroni-api-password"],
            "REDIS_PASSWORD": self.launch.secrets["redis-password"],
            "SUPERUSER": SUPERUSER,
        }

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["sh", "-c", script], env=self.env(), capture_output=True, text=True, timeout=120
        )
        print(f"\n$ exit {done.returncode}\n{done.stdout}{done.stderr}", flush=True)
        for secret in self.env().values():
            if len(secret) > 8:
                assert secret not in done.stdout + done.stderr, "a password was printed"
        return done

    def pg_script(self, apis: list[str] | None = None, catch_up: int = 30) -> str:
        return postgres_cutover_script(
            self.source,
            self.apis if apis is None else apis,
            superuser=SUPERUSER,
            superuser_password_env="POSTGRES_PASSWORD",
            rest_user=REST_API_USER,
            rest_password_env=RESTAPI_PASSWORD_ENV,
            catch_up_seconds=catch_up,
            promote_seconds=60,
        )

    def guard_script(self, target: Endpoint, catch_up: int = 30) -> str:
        """Kubernetes's standby guard (the target: the standby's primary Service there)."""
        return standby_guard_script(
            self.source, target, password_env="POSTGRES_PASSWORD", catch_up_seconds=catch_up
        )

    def rows(self, endpoint: Endpoint) -> set[int]:
        """The test table's sequence numbers on ``endpoint``."""
        with self.superuser(endpoint) as conn:
            return {row[0] for row in conn.execute(f"SELECT seq FROM {TABLE}").fetchall()}

    def refused_while_behind(self, writer: Writer, script: str) -> None:
        """``script`` run while the standby leader does not replay: it freezes the source,
        waits in vain, refuses and gives the source its writes back (the writer gets 20 more
        rows in)."""
        with self.replay_paused(self.standby_leader()):
            before = len(writer.acked)
            done = self.run(script)
            assert done.returncode == 1 and "replayed up to" in done.stderr, done.stderr
            assert "not promoted" in done.stderr
            assert "the source takes writes again" in done.stderr
            assert self.source_read_only() == "off"
            wait_for(lambda: len(writer.acked) > before + 20, 15, "source not writable again")

    @contextlib.contextmanager
    def replay_paused(self, standby: Endpoint) -> Iterator[None]:
        """The standby does not replay (Patroni in maintenance mode, which then leaves a
        paused replay paused), until the block ends."""
        self.maintenance(True)
        with self.superuser(standby) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        try:
            time.sleep(0.5)
            yield
        finally:
            with self.superuser(standby) as conn:
                conn.execute("SELECT pg_wal_replay_resume()")
            self.maintenance(False)

    def standby_leader(self) -> Endpoint:
        return next(
            self.member(i)
            for i in range(2)
            if httpx.get(f"http://{self.apis[i]}/standby-leader", timeout=3).status_code == 200
        )

    def redis_script(self, target: Endpoint | None = None) -> str:
        return redis_cutover_script(
            self.redis_source, target or self.redis_target, catch_up_seconds=10
        )

    def source_read_only(self) -> str:
        with self.superuser(self.source, "postgres") as conn:
            row = conn.execute("SHOW default_transaction_read_only").fetchone()
        assert row is not None
        return str(row[0])

    def leaders(self) -> list[str]:
        found = []
        for api in self.apis:
            try:
                if httpx.get(f"http://{api}/primary", timeout=3).status_code == 200:
                    found.append(api)
            except httpx.HTTPError:
                pass
        return found

    def maintenance(self, on: bool) -> None:
        """Patroni's maintenance mode (it then leaves a paused replay paused)."""
        auth = (REST_API_USER, self.growth.secrets["patroni-api-password"])
        response = httpx.patch(
            f"http://{self.apis[0]}/config", json={"pause": on}, auth=auth, timeout=10
        )
        response.raise_for_status()

        def applied() -> bool:
            state = httpx.get(f"http://{self.apis[0]}/patroni", timeout=3).json()
            return bool(state.get("pause", False)) == on

        wait_for(applied, 30, f"maintenance mode {on} not applied")

    def redis(self, endpoint: Endpoint) -> redis.Redis:
        password = self.launch.secrets["redis-password"]
        return redis.Redis(
            endpoint.host, endpoint.port, password=password, socket_timeout=5, decode_responses=True
        )


def started_pair(
    base: Path, source_stack: str, source_file: str, target_stack: str
) -> Iterator[Pair]:
    """The source phase up with the test's table, then the target (a trimmed growth) started
    as its replica; both stopped afterwards."""
    (base / f"Pulumi.{source_stack}.yaml").write_text(source_file)
    (base / "Pulumi.target.yaml").write_text(GROWTH)
    source = runner.up(
        runner.load_spec(base / f"Pulumi.{source_stack}.yaml"),
        stack=source_stack,
        state_dir=base / "source",
    )
    try:
        url = source.summary["postgres"]["primary"]
        with psycopg.connect(url, password=source.secrets["postgres-password"]) as conn:
            conn.execute(f"CREATE TABLE {TABLE} (seq bigint PRIMARY KEY)")
        local_data.prepare_source(source)
        target = local_data.start_target(
            runner.load_spec(base / "Pulumi.target.yaml"), target_stack, base / "target", source
        )
        try:
            yield Pair(source, target)
        finally:
            target.down()
    finally:
        source.down()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """launch (a single PostgreSQL) and a growth started as its standby cluster."""
    yield from started_pair(tmp_path_factory.mktemp("cutover"), "launch", LAUNCH, "growth")


@pytest.fixture(scope="module")
def patroni_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """A Patroni source (growth, trimmed) and a growth started as its standby cluster: the
    Docker pair growth → scale (or growth → growth-eu), whose source's read-write door is a
    router (HAProxy) in front of the leader."""
    base = tmp_path_factory.mktemp("cutover-patroni")
    yield from started_pair(base, "growth", GROWTH, "growth-eu")


def wait_for(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_kubernetes_standby_guard_freezes_then_lets_the_cutover_go(pair: Pair) -> None:
    """The Job before replicateFrom goes (scaling/kubernetes/guards.py): the same SQL
    against the local standby leader as against StackGres's primary Service. It leaves the
    source read-only; the test gives it its writes back for the Docker guard's test."""
    url = pair.launch.summary["postgres"]["primary"]
    writer = row_writer(url, pair.launch.secrets["postgres-password"]).start()
    standby = pair.standby_leader()
    try:
        wait_for(lambda: len(writer.acked) > 50, 30, "no row acknowledged by the source")
        # 1. The target does not answer: refused, the source untouched.
        done = pair.run(pair.guard_script(Endpoint("127.0.0.1", 9)))
        assert done.returncode == 1 and "cannot log into the target" in done.stderr
        assert pair.source_read_only() == "off"

        # 2. The standby does not replay (paused): the source frozen, then given back.
        pair.refused_while_behind(writer, pair.guard_script(standby, catch_up=3))

        # 3. The guard lets the cut-over go: the source frozen, every write replayed.
        started = time.monotonic()
        done = pair.run(pair.guard_script(standby))
        seconds = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert "replicateFrom may go" in done.stdout
        assert pair.source_read_only() == "on"
        # 4. Run again (a Job replaced): the source stays frozen, no second freeze.
        again = pair.run(pair.guard_script(standby))
        assert again.returncode == 0 and "read-only already" in again.stderr, again.stderr
    finally:
        acked = writer.stop()
        with pair.superuser(pair.source, "postgres") as conn:
            conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
            conn.execute("SELECT pg_reload_conf()")
    present = pair.rows(standby)
    missing = sorted(set(acked) - present)
    print(
        f"\n[kubernetes guard] rows acknowledged {len(acked)}, on the standby {len(present)}, "
        f"missing {len(missing)}; refused while frozen {writer.failed}; guard {seconds:.1f} s"
    )
    assert not missing
    wait_for(lambda: pair.source_read_only() == "off", 10, "the source stays read-only")


def test_postgres_cutover_refuses_then_promotes_with_every_row(pair: Pair) -> None:
    url = pair.launch.summary["postgres"]["primary"]
    writer = row_writer(url, pair.launch.secrets["postgres-password"]).start()
    try:
        wait_for(lambda: len(writer.acked) > 50, 30, "no row acknowledged by the source")
        # 1. No target answers: refused before anything is touched.
        done = pair.run(pair.pg_script(apis=[CLOSED]))
        assert done.returncode == 1 and "no member of the target answers" in done.stderr
        assert pair.source_read_only() == "off"

        # 2. The target does not catch up (replay paused on its standby leader, Patroni in
        # maintenance mode so that it does not resume it): the source is frozen, then given
        # its writes back; the target is not promoted.
        pair.refused_while_behind(writer, pair.pg_script(catch_up=3))
        assert pair.leaders() == []

        # 3. The cut-over: writes stop, the target replays them all, then it is promoted.
        acked_before = len(writer.acked)
        started = time.monotonic()
        done = pair.run(pair.pg_script())
        seconds = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert "leads: the target takes writes" in done.stdout
    finally:
        acked = writer.stop()
    assert len(acked) > acked_before  # it wrote until the freeze
    assert len(pair.leaders()) == 1
    assert pair.source_read_only() == "on"
    leader = pair.member(pair.apis.index(pair.leaders()[0]))
    with pair.superuser(leader) as conn:
        present = {row[0] for row in conn.execute(f"SELECT seq FROM {TABLE}").fetchall()}
        conn.execute(f"INSERT INTO {TABLE} (seq) VALUES (-1)")  # the target takes writes
    missing = sorted(set(acked) - present)
    print(
        f"\nrows acknowledged {len(acked)}, present {len(present)}, missing {len(missing)};"
        f" refused while frozen {writer.failed}; cut-over script {seconds:.1f} s"
    )
    assert not missing

    # 4. Run again: promoted already, nothing touched.
    done = pair.run(pair.pg_script())
    assert done.returncode == 0 and "promoted by an earlier run" in done.stdout
    assert pair.source_read_only() == "on"


def test_redis_cutover_refuses_then_promotes_with_every_key(pair: Pair) -> None:
    source, target = pair.redis_source, pair.redis_target
    writer = key_writer(source, pair.launch.secrets["redis-password"]).start()
    try:
        wait_for(lambda: len(writer.acked) > 50, 30, "no key acknowledged by the source")
        # 1. The target's master does not answer: refused, the source never paused.
        done = pair.run(pair.redis_script(Endpoint("127.0.0.1", 9)))
        assert done.returncode == 1 and "does not answer" in done.stderr
        # 2. Its link to the source is down: refused before the pause.
        with pair.redis(target) as conn:
            conn.config_set("masterauth", "not-the-password")
            conn.execute_command("CLIENT", "KILL", "TYPE", "master")
        try:
            wait_for(
                lambda: pair.redis(target).info("replication")["master_link_status"] != "up",
                10,
                "the target's link stayed up",
            )
            done = pair.run(pair.redis_script())
            assert done.returncode == 1 and "not in sync" in done.stderr
        finally:
            with pair.redis(target) as conn:
                conn.config_set("masterauth", pair.launch.secrets["redis-password"])
        wait_for(
            lambda: pair.redis(target).info("replication")["master_link_status"] == "up",
            30,
            "the target did not follow the source again",
        )
        with pair.redis(source) as conn:
            assert conn.set("cutover:probe", 1)  # never paused, writable

        # 3. The cut-over.
        done = pair.run(pair.redis_script())
        assert done.returncode == 0, done.stderr
    finally:
        acked = writer.stop()
    with pair.redis(target) as conn:
        info = conn.info("replication")
        present = {int(k.split(":")[1]) for k in conn.scan_iter("cutover:*") if k[8:].isdigit()}
        persistence = conn.info("persistence")
    assert info["role"] == "master"
    assert persistence["aof_rewrite_in_progress"] == 0
    missing = sorted(set(acked) - present)
    print(
        f"\nkeys acknowledged {len(acked)}, present {len(present)}, missing {len(missing)};"
        f" refused after the cut-over {writer.failed}"
    )
    assert not missing
    with pair.redis(source) as conn, pytest.raises(redis.ResponseError, match="NOREPLICAS"):
        conn.set("cutover:after", 1)

    # 4. Run again: the target's master runs on its own already.
    done = pair.run(pair.redis_script())
    assert done.returncode == 0 and "an earlier run" in done.stdout


def test_postgres_cutover_from_a_patroni_source(patroni_pair: Pair) -> None:
    """The same guard with a Patroni source: it logs in through the source's router (the
    members admit the superuser from the private network while sikka:promoteTo is set),
    stops the leader's writes, and promotes the target once it has them all."""
    pair = patroni_pair
    router = pair.launch.entry("haproxy-0")
    assert (router.host, router.port) == (pair.source.host, pair.source.port)
    url = pair.launch.summary["postgres"]["primary"]
    writer = row_writer(url, pair.launch.secrets["postgres-password"]).start()
    try:
        wait_for(lambda: len(writer.acked) > 50, 30, "no row acknowledged by the source")
        pair.refused_while_behind(writer, pair.pg_script(catch_up=3))
        assert pair.leaders() == []
        started = time.monotonic()
        done = pair.run(pair.pg_script())
        seconds = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        assert "leads: the target takes writes" in done.stdout
    finally:
        acked = writer.stop()
    assert pair.source_read_only() == "on"
    leader = pair.member(pair.apis.index(pair.leaders()[0]))
    present = pair.rows(leader)
    missing = sorted(set(acked) - present)
    print(
        f"\n[patroni source] rows acknowledged {len(acked)}, present {len(present)}, missing "
        f"{len(missing)}; refused while frozen {writer.failed}; cut-over script {seconds:.1f} s"
    )
    assert not missing

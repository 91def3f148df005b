"""The data tier of a local transition on real servers: launch → growth → scale.

One chain of phases for the whole module (each start costs 20-60 s here): launch is
started, loaded, and growth is started as its replica (Patroni standby cluster, Redis master
replicating launch's); the source is frozen, final-synced, unfrozen (it must serve writes
again), frozen again and growth promoted. Growth, now carrying launch's data, is then the
source of scale (Patroni standby cluster again; keys copied into scale's Redis Cluster),
with the same unfreeze round on a Patroni source. The fixtures record what each step
measured and what the servers said; the tests assert on those records and on the servers.

Run with ``-s`` to see the figures (catch-up lag, freeze → promote write downtime per tier,
final LSN vs replayed LSN).
"""

from __future__ import annotations

import json
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
from local_fixtures import ROOT
from local_helpers import Phase, wait_for
from redis.cluster import ClusterNode, RedisCluster

from scaling.local import LocalRun, patroni_api, runner
from scaling.local.follow import Follow
from scaling.local.runner import patroni_apis
from scaling.model import SUPERUSER
from scaling.render.endpoints import Endpoint
from scaling.transition import local_data
from scaling.transition.errors import StepFailed

pytestmark = pytest.mark.integration

TABLE = "transition_rows"


@dataclass
class Writer:
    """Rows with a sequence number, each acknowledged (autocommit) by the source's
    read-write door, from a thread while the target starts."""

    url: str
    password: str
    phase: str
    first: int
    acked: list[int] = field(default_factory=list)
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = self.first
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self.url, password=self.password, autocommit=True, connect_timeout=3
                ) as conn:
                    while not self._stop.is_set():
                        conn.execute(
                            f"INSERT INTO {TABLE} (seq, phase) VALUES (%s, %s)", (seq, self.phase)
                        )
                        self.acked.append(seq)
                        seq += 1
                        time.sleep(0.01)
            except psycopg.Error:
                self.failed += 1
                seq += 1  # that one may or may not have committed: never reuse it
                time.sleep(0.1)

    def stop(self) -> list[int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        return self.acked


def insert_rows(url: str, password: str, phase: str, seqs: range) -> list[int]:
    with psycopg.connect(url, password=password, autocommit=True, connect_timeout=5) as conn:
        for seq in seqs:
            conn.execute(f"INSERT INTO {TABLE} (seq, phase) VALUES (%s, %s)", (seq, phase))
    return list(seqs)


def leader_endpoint(run: LocalRun) -> Endpoint:
    leader = patroni_api.leader(patroni_api.fetch_cluster(patroni_apis(run.state)))
    assert leader is not None, "no Patroni leader"
    entry = run.entry(leader)
    assert entry.port is not None
    return Endpoint(entry.host, entry.port)


def superuser_query(run: LocalRun, endpoint: Endpoint, query: str, dbname: str = "sikka") -> Any:
    with psycopg.connect(
        host=endpoint.host,
        port=endpoint.port,
        user=SUPERUSER,
        password=run.secrets["postgres-superuser-password"],
        dbname=dbname,
        autocommit=True,
        connect_timeout=5,
    ) as conn:
        return conn.execute(query).fetchall()


def redis_client(run: LocalRun, endpoint: Endpoint) -> redis.Redis:
    return redis.Redis(
        host=endpoint.host,
        port=endpoint.port,
        password=run.secrets["redis-password"],
        decode_responses=True,
        socket_timeout=5,
    )


def set_keys(run: LocalRun, prefix: str, count: int, replicas: int = 0) -> list[str]:
    """SET on the source's master, each acknowledged (and by WAIT where it has replicas)."""
    master = Follow.of(run).redis_master
    assert master is not None
    keys = [f"{prefix}:{i}" for i in range(count)]
    with redis_client(run, master) as conn:
        for key in keys:
            assert conn.set(key, key.upper())
        if replicas:
            assert conn.execute_command("WAIT", replicas, 10_000) >= replicas
    return keys


def bulk_rows(url: str, password: str, phase: str, seqs: range) -> list[int]:
    """Many rows in one acknowledged commit (megabytes of WAL for the target to catch up)."""
    with psycopg.connect(url, password=password, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            f"INSERT INTO {TABLE} (seq, phase) SELECT g, %s || repeat('.', 200)"
            " FROM generate_series(%s::bigint, %s::bigint) g",
            (phase, seqs.start, seqs.stop - 1),
        )
    return list(seqs)


def report(title: str, figures: dict[str, Any]) -> None:
    print(f"\n=== {title}\n{json.dumps(figures, indent=1, default=str)}", flush=True)


def freeze_round_trip(
    source: LocalRun, target: LocalRun, write_url: str, password: str
) -> dict[str, Any]:
    """freeze → final-sync → unfreeze: the source must refuse writes while frozen and take
    them again afterwards (it is left serving, as a rollback leaves it)."""
    record: dict[str, Any] = {"freeze": local_data.freeze_source(source)}
    try:
        insert_rows(write_url, password, "frozen", range(900_000, 900_001))
        record["write_while_frozen"] = "accepted"
    except psycopg.Error as error:
        record["write_while_frozen"] = type(error).__name__
    record["final_sync"] = local_data.final_sync(source, target, 90)
    record["unfreeze"] = local_data.unfreeze_source(source)
    return record


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def runs() -> Iterator[list[LocalRun]]:
    """Every run the module starts, torn down at its end (targets first)."""
    started: list[LocalRun] = []
    try:
        yield started
    finally:
        for run in reversed(started):
            run.down()


@pytest.fixture(scope="module")
def launch_to_growth(
    runs: list[LocalRun], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("transition-data")
    launch = runner.up(
        runner.load_spec(ROOT / "Pulumi.launch.yaml"),
        stack="launch",
        state_dir=base / "launch",
        progress=runner.print_progress,
    )
    runs.append(launch)
    url, password = launch.summary["postgres"]["primary"], launch.secrets["postgres-password"]
    with psycopg.connect(url, password=password, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (seq bigint PRIMARY KEY, phase text NOT NULL)")
    rec: dict[str, Any] = {"launch": launch, "base": base}
    acked = insert_rows(url, password, "before", range(1, 501))
    keys = set_keys(launch, "before", 200)
    rec["prepare"] = local_data.prepare_source(launch)
    writer = Writer(url, password, "during-start", 10_000)
    writer.start()
    started = time.monotonic()
    try:
        growth = local_data.start_target(
            runner.load_spec(ROOT / "Pulumi.growth.yaml"),
            "growth",
            base / "growth",
            launch,
            runner.print_progress,
        )
    finally:
        acked += writer.stop()
    runs.append(growth)
    rec["growth"] = growth
    rec["start_seconds"] = round(time.monotonic() - started, 1)
    rec["writer_failures"] = writer.failed
    acked += insert_rows(url, password, "catch-up", range(20_000, 20_300))
    acked += bulk_rows(url, password, "bulk", range(100_000, 150_000))
    keys += set_keys(launch, "catch-up", 200)
    rec["catch_up"] = local_data.catch_up(launch, growth, 120)
    rec["round_trip"] = freeze_round_trip(launch, growth, url, password)
    acked += insert_rows(url, password, "after-unfreeze", range(30_000, 30_050))
    keys += set_keys(launch, "after-unfreeze", 20)
    # The transition resumed: the target catches up again (its receiver reconnects to the
    # restarted source) before the source is frozen again.
    rec["catch_up_again"] = local_data.catch_up(launch, growth, 120)
    rec["freeze"] = local_data.freeze_source(launch)
    rec["final_sync"] = local_data.final_sync(launch, growth, 90)
    rec["promote"] = local_data.promote_target(launch, growth)
    rec["acked"], rec["keys"] = acked, keys
    host, _, port = rec["freeze"]["redis_master"].rpartition(":")
    launch_master = Endpoint(host, int(port))
    with redis_client(launch, launch_master) as conn:
        rec["launch_redis_after"] = conn.info("replication")
        rec["launch_replica_priority"] = conn.config_get("replica-priority")["replica-priority"]
    rec["launch_postgres_alive"] = launch.alive("postgres-0")
    report(
        "launch → growth",
        {
            "target start (s)": rec["start_seconds"],
            "rows written while the target started": len(writer.acked),
            "catch-up": rec["catch_up"],
            "unfreeze round trip": rec["round_trip"],
            "catch-up after the unfreeze": rec["catch_up_again"],
            "final sync": rec["final_sync"],
            "promote": rec["promote"],
        },
    )
    return rec


@pytest.fixture(scope="module")
def growth_to_scale(runs: list[LocalRun], launch_to_growth: dict[str, Any]) -> dict[str, Any]:
    growth: LocalRun = launch_to_growth["growth"]
    base: Path = launch_to_growth["base"]
    launch: LocalRun = launch_to_growth["launch"]
    launch.down()  # retired: frees the machine for scale
    runs.remove(launch)
    url, password = growth.summary["postgres"]["primary"], growth.secrets["postgres-password"]
    acked = insert_rows(url, password, "growth", range(40_000, 40_300))
    keys = set_keys(growth, "growth", 300, replicas=1)
    rec: dict[str, Any] = {"prepare": local_data.prepare_source(growth)}
    started = time.monotonic()
    scale = local_data.start_target(
        runner.load_spec(ROOT / "Pulumi.scale.yaml"),
        "scale",
        base / "scale",
        growth,
        runner.print_progress,
    )
    runs.append(scale)
    rec["scale"], rec["growth"] = scale, growth
    rec["start_seconds"] = round(time.monotonic() - started, 1)
    acked += insert_rows(url, password, "catch-up", range(50_000, 50_200))
    acked += bulk_rows(url, password, "bulk", range(200_000, 250_000))
    keys += set_keys(growth, "growth-catch-up", 100, replicas=1)
    rec["catch_up"] = local_data.catch_up(growth, scale, 120)
    rec["round_trip"] = freeze_round_trip(growth, scale, url, password)
    acked += insert_rows(url, password, "after-unfreeze", range(60_000, 60_050))
    keys += set_keys(growth, "growth-after-unfreeze", 20, replicas=1)
    rec["catch_up_again"] = local_data.catch_up(growth, scale, 120)
    rec["freeze"] = local_data.freeze_source(growth)
    rec["final_sync"] = local_data.final_sync(growth, scale, 90)
    rec["promote"] = local_data.promote_target(growth, scale)
    rec["acked"] = launch_to_growth["acked"] + acked
    rec["keys"], rec["launch_keys"] = keys, launch_to_growth["keys"]
    report(
        "growth → scale",
        {
            "target start (s)": rec["start_seconds"],
            "catch-up": rec["catch_up"],
            "unfreeze round trip": rec["round_trip"],
            "catch-up after the unfreeze": rec["catch_up_again"],
            "final sync": rec["final_sync"],
            "promote": rec["promote"],
        },
    )
    return rec


# ------------------------------------------------------------------------ launch → growth


def test_launch_rows_are_on_the_growth_leader(launch_to_growth: dict[str, Any]) -> None:
    growth: LocalRun = launch_to_growth["growth"]
    rows = superuser_query(growth, leader_endpoint(growth), f"SELECT seq FROM {TABLE}")
    present = {row[0] for row in rows}
    acked = launch_to_growth["acked"]
    missing = sorted(set(acked) - present)
    print(f"\nlaunch → growth: rows acknowledged {len(acked)}, missing on growth {len(missing)}")
    assert not missing, f"{len(missing)} acknowledged rows missing, e.g. {missing[:10]}"
    assert len(acked) > 850  # before, during the start, catch-up and after the unfreeze


def test_final_checkpoint_replayed_and_downtime_measured(launch_to_growth: dict[str, Any]) -> None:
    sync = launch_to_growth["final_sync"]["postgres"]
    assert local_data.lsn_int(sync["replayed_lsn"]) >= local_data.lsn_int(sync["final_lsn"])
    # Stopped, or its process still on its way out once its PostgreSQL was down.
    assert set(sync["stopped"]) == {"postgres-0"}
    assert sync["stopped"]["postgres-0"] in ("stopped", "exiting")
    downtime = launch_to_growth["promote"]["write_downtime_seconds"]
    assert set(downtime) == {"postgres", "redis"}
    assert all(value > 0 for value in downtime.values())


def test_growth_primary_accepts_writes_through_its_pooler(launch_to_growth: dict[str, Any]) -> None:
    growth: LocalRun = launch_to_growth["growth"]
    url = growth.summary["postgres"]["pooler"]
    password = growth.secrets["postgres-password"]  # the source's, inherited

    def writes() -> bool:
        insert_rows(url, password, "growth-write", range(70_000, 70_001))
        return True

    wait_for("a write through growth's PgBouncer", writes, 30)
    rows = superuser_query(
        growth, leader_endpoint(growth), f"SELECT 1 FROM {TABLE} WHERE seq = 70000"
    )
    assert rows == [(1,)]


def test_growth_replicas_stream_from_the_new_leader(launch_to_growth: dict[str, Any]) -> None:
    growth: LocalRun = launch_to_growth["growth"]
    timeline = launch_to_growth["promote"]["postgres"]["timeline"]
    names = [m["name"] for m in growth.summary["postgres"]["members"]]

    def streaming() -> bool:
        cluster = patroni_api.fetch_cluster(patroni_apis(growth.state))
        rows = patroni_api.members(cluster or {})
        replicas = [r for r in rows if r["role"] != "leader"]
        return (
            patroni_api.healthy(cluster, names)
            and len(replicas) == len(names) - 1
            and all(r["timeline"] == timeline for r in replicas)
        )

    wait_for("growth's replicas stream from the promoted leader", streaming, 60)
    assert timeline >= 2  # promotion opened a new timeline


def test_launch_keys_are_on_the_growth_master(launch_to_growth: dict[str, Any]) -> None:
    growth: LocalRun = launch_to_growth["growth"]
    master = Follow.of(growth).redis_master
    assert master is not None
    keys = launch_to_growth["keys"]
    with redis_client(growth, master) as conn:
        assert conn.info("replication")["role"] == "master"
        values = conn.mget(keys)
        assert conn.set("after-promotion", "1")
    missing = [k for k, v in zip(keys, values, strict=True) if v != k.upper()]
    print(f"\nlaunch → growth: keys acknowledged {len(keys)}, missing on growth {len(missing)}")
    assert not missing


def test_launch_redis_now_replicates_growth(launch_to_growth: dict[str, Any]) -> None:
    info = launch_to_growth["launch_redis_after"]
    assert info["role"] == "slave"
    assert launch_to_growth["launch_replica_priority"] == "0"  # growth's Sentinels skip it
    assert f"{info['master_host']}:{info['master_port']}" == str(
        Follow.of(launch_to_growth["growth"]).redis_master
    )
    assert launch_to_growth["launch_postgres_alive"] is False  # stopped intact


def test_growth_sentinels_started_at_promotion(launch_to_growth: dict[str, Any]) -> None:
    growth: LocalRun = launch_to_growth["growth"]
    started = launch_to_growth["promote"]["redis"]["sentinels_started"]
    assert started == ["redis-sentinel-0", "redis-sentinel-1", "redis-sentinel-2"]
    assert all(growth.alive(name) for name in started)
    # The gateways, only alive until then, find the master through them and become ready.
    for gateway in growth.summary["gateways"]:
        url = gateway["health_url"]
        wait_for(f"{url} answers 200", lambda u=url: httpx.get(u, timeout=2).status_code == 200, 30)


def test_unfrozen_launch_served_writes_again(launch_to_growth: dict[str, Any]) -> None:
    trip = launch_to_growth["round_trip"]
    assert trip["write_while_frozen"] != "accepted"
    assert trip["unfreeze"]["postgres"]["read_only"] == "off"
    assert trip["unfreeze"]["postgres"]["restarted"] == ["postgres-0"]
    # The writes made after the unfreeze reached growth (test above: no row missing).
    assert any(seq >= 30_000 for seq in launch_to_growth["acked"])


def test_unfreeze_refused_after_promotion(launch_to_growth: dict[str, Any]) -> None:
    with pytest.raises(StepFailed, match="promoted"):
        local_data.unfreeze_source(launch_to_growth["launch"])


# ------------------------------------------------------------------------- growth → scale


def test_rows_of_both_phases_are_on_the_scale_leader(growth_to_scale: dict[str, Any]) -> None:
    scale: LocalRun = growth_to_scale["scale"]
    rows = superuser_query(scale, leader_endpoint(scale), f"SELECT seq FROM {TABLE}")
    present = {row[0] for row in rows}
    acked = growth_to_scale["acked"]
    missing = sorted(set(acked) - present)
    print(f"\ngrowth → scale: rows acknowledged {len(acked)}, missing on scale {len(missing)}")
    assert not missing, f"{len(missing)} acknowledged rows missing, e.g. {missing[:10]}"
    sync = growth_to_scale["final_sync"]["postgres"]
    assert local_data.lsn_int(sync["replayed_lsn"]) >= local_data.lsn_int(sync["final_lsn"])
    # Replicas stopped before the leader.
    assert list(sync["stopped"])[-1] == growth_to_scale["freeze"]["postgres_leader"]


def test_keys_are_in_the_scale_cluster(growth_to_scale: dict[str, Any]) -> None:
    scale: LocalRun = growth_to_scale["scale"]
    nodes = [ClusterNode(*str(n).rsplit(":", 1)) for n in scale.summary["redis"]["nodes"]]
    cluster = RedisCluster(
        startup_nodes=nodes, password=scale.secrets["redis-password"], decode_responses=True
    )
    try:
        keys = growth_to_scale["keys"] + growth_to_scale["launch_keys"]
        values = [cluster.get(key) for key in keys]
        assert cluster.set("after-cut-over", "1")
    finally:
        cluster.close()
    missing = [k for k, v in zip(keys, values, strict=True) if v != k.upper()]
    print(f"\ngrowth → scale: keys acknowledged {len(keys)}, missing on scale {len(missing)}")
    assert not missing
    sync = growth_to_scale["final_sync"]["redis"]
    assert sync["keys_copied"] >= len(set(keys))
    assert sync["source_master_shut_down"]


def test_unfrozen_growth_served_writes_again(growth_to_scale: dict[str, Any]) -> None:
    trip = growth_to_scale["round_trip"]
    assert trip["write_while_frozen"] != "accepted"
    unfreeze = trip["unfreeze"]
    assert unfreeze["postgres"]["read_only"] == "off"
    assert len(unfreeze["postgres"]["restarted"]) == 3  # every Patroni member
    # final-sync stopped growth's PgBouncers with its PostgreSQL: 2 poolers x 2 processes.
    assert len(unfreeze["postgres"]["poolers_restarted"]) == 4
    assert unfreeze["redis"]["restarted"]  # the master shut down with SAVE, its Sentinels


def test_scale_primary_accepts_writes(growth_to_scale: dict[str, Any]) -> None:
    scale: LocalRun = growth_to_scale["scale"]
    url = scale.summary["postgres"]["primary"]

    def writes() -> bool:
        insert_rows(url, scale.secrets["postgres-password"], "scale-write", range(80_000, 80_001))
        return True

    wait_for("a write through scale's read-write door", writes, 30)
    assert growth_to_scale["promote"]["write_downtime_seconds"]["postgres"] > 0


# ------------------------------------------------------------------- prepare, undone


@pytest.mark.destructive
def test_prepare_source_admits_replication_and_unprepare_takes_it_back(
    launch_phase: Phase,
) -> None:
    """A launch source gets the replication login a standby needs; a rollback's
    unprepare_source leaves it as a phase without replicas has it (NOLOGIN, no hba line).

    On the session's launch phase (conftest.py), as the last of its users: the replication
    role stays behind (NOLOGIN), as a rollback leaves it."""
    launch = launch_phase.run
    door = Follow.of(launch).postgres

    def replicate() -> None:
        psycopg.connect(
            host=door.host,
            port=door.port,
            user="replicator",
            password=launch.secrets["replication-password"],
            dbname="replication",
            replication="true",
            connect_timeout=5,
        ).close()

    with pytest.raises(psycopg.OperationalError):
        replicate()  # launch has no replication login
    assert local_data.prepare_source(launch)["replication_role"] == "created"
    replicate()
    again = local_data.prepare_source(launch)  # idempotent
    assert again["replication_role"] == "present" and again["hba_line_added"] is False
    assert local_data.unprepare_source(launch)["hba_line_removed"] is True
    with pytest.raises(psycopg.OperationalError):
        replicate()
    rows = superuser_query(
        launch, door, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'replicator'"
    )
    assert rows == [(False,)]

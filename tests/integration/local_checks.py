"""The checks every phase shares; each test module calls the ones its topology has."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg
import redis
from local_helpers import (
    Phase,
    client_ids_on_distinct_gateways,
    deliver,
    new_marker,
    open_client,
    pg_connect,
    pg_value,
    pooler_console,
    recv_json,
    run_async,
    run_pids,
    send_location,
    still_alive,
    subscribe,
    wait_for,
)

from scaling.local import patroni_api, runner
from scaling.local.postgres import pooler_process_name
from scaling.local.topology import REDIS_DATA_ROLES, local_topology, nodes
from scaling.render.alerts import alert_rules
from scaling.render.pgbouncer import process_share
from scaling.topology.monitoring import monitoring_jobs

REPLICATION_TIMEOUT = 20.0


def check_processes_are_topology_nodes(phase: Phase) -> None:
    """Every process is a node of the phase's topology, under its name and role, and every
    long-running node runs (every gateway too)."""
    topology = local_topology(phase.spec)
    # The monitoring tier (Prometheus, its exporters) runs too, each node one process.
    wanted = [n for n in topology.nodes if not n.one_shot]
    started = {p.name: p.role for p in phase.run.state.processes}
    # A pooler node is pooler.processes PgBouncer processes, each recorded on its own.
    expected = {
        pooler_process_name(n.name, k) if n.role == "pooler" else n.name: n.role
        for n in wanted
        for k in range(phase.spec.pooler.processes if n.role == "pooler" else 1)
    }
    assert started == expected


def check_all_processes_alive(phase: Phase) -> None:
    report = runner.status(phase.run.state.stack, state_dir=_state_dir(phase))
    assert report["all_alive"], [p for p in report["processes"] if not p["alive"]]


def _state_dir(phase: Phase) -> Any:
    from pathlib import Path

    return Path(phase.run.state.state_dir)


def check_row_reaches_replicas(phase: Phase) -> None:
    pg = phase.summary["postgres"]
    marker = new_marker()
    with pg_connect(phase, pg["primary"], autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS trips (id text PRIMARY KEY, at timestamptz DEFAULT now())"
        )
        conn.execute("INSERT INTO trips (id) VALUES (%s)", (marker,))
    assert pg_value(phase, pg["primary"], "SELECT count(*) FROM trips WHERE id = %s", marker) == 1
    assert len(pg["replicas"]) == phase.spec.postgres.read_replicas
    for url in pg["replicas"]:
        waited = wait_for(
            f"row visible on {url}",
            lambda u=url: (
                pg_value(phase, u, "SELECT count(*) FROM trips WHERE id = %s", marker) == 1
            ),
            REPLICATION_TIMEOUT,
            interval=0.05,
        )
        assert pg_value(phase, url, "SELECT pg_is_in_recovery()") is True
        print(
            f"\n[{phase.spec.phase}] row visible on replica {urlsplit(url).netloc} "
            f"after {waited:.2f}s"
        )
    if pg.get("pooler_read_only"):
        wait_for(
            "row visible through the read-only pool",
            lambda: (
                pg_value(
                    phase,
                    pg["pooler_read_only"],
                    "SELECT count(*) FROM trips WHERE id = %s",
                    marker,
                )
                == 1
            ),
            REPLICATION_TIMEOUT,
        )
        assert pg_value(phase, pg["pooler_read_only"], "SELECT pg_is_in_recovery()") is True


def patroni_cluster(phase: Phase) -> dict[str, Any]:
    found = patroni_api.fetch_cluster(runner.patroni_apis(phase.run.state))
    assert found is not None, "no Patroni member answers"
    return found


def current_replicas(phase: Phase) -> list[str]:
    """The Patroni members that are not the leader now."""
    cluster = patroni_cluster(phase)
    head = patroni_api.leader(cluster)
    return [m["name"] for m in patroni_api.members(cluster) if m["name"] != head]


def check_patroni_cluster_follows_topology(phase: Phase) -> None:
    """The topology's members form one Patroni cluster: one leader, every other member
    streaming from it through its own replication slot (Patroni names it after the member),
    one of them the synchronous standby when the phase asks for one."""
    topology = local_topology(phase.spec)
    names = [n.name for n in nodes(topology, "postgres", "primary", "replica")]
    wait_for(
        "a leader and every other member streaming",
        lambda: patroni_api.healthy(patroni_cluster(phase), names),
        REPLICATION_TIMEOUT,
    )
    cluster = patroni_cluster(phase)
    rows = {m["name"]: m for m in patroni_api.members(cluster)}
    assert sorted(rows) == sorted(names)
    head = patroni_api.leader(cluster)
    if phase.spec.postgres.synchronous_mode != "off":
        assert [n for n, m in rows.items() if m["role"] == "sync_standby"], rows
    expected = {name.replace("-", "_") for name in names if name != head}
    with pg_connect(phase, phase.summary["postgres"]["primary"]) as conn:
        found = conn.execute("SELECT slot_name FROM pg_replication_slots WHERE active").fetchall()
    assert {row[0] for row in found} == expected
    print(f"\n[{phase.spec.phase}] Patroni: {head} leads, {sorted(expected)} stream by slot")


def _pool_servers(phase: Phase) -> int:
    """Server connections PgBouncer holds for the primary's pool right now."""
    with pooler_console(phase) as conn:
        cur = conn.cursor()
        cur.execute("SHOW POOLS")
        names = [c.name for c in cur.description or []]
        total = 0
        for row in cur.fetchall():
            record = dict(zip(names, row, strict=True))
            if record["database"] == phase.spec.postgres.database:
                total += sum(
                    int(record[k])
                    for k in names
                    if k.startswith("sv_") and isinstance(record[k], int)
                )
        return total


def check_pgbouncer_serves_10x_pool(phase: Phase) -> None:
    clients = 10 * (phase.spec.pooler.default_pool_size + phase.spec.pooler.reserve_pool_size)
    # The console answers from one process of the first pooler (whichever the kernel picks):
    # its share of the pools is what it may open.
    shares = [process_share(phase.spec, k) for k in range(phase.spec.pooler.processes)]
    pool = max(share.default_pool_size + share.reserve_pool_size for share in shares)
    url = phase.summary["postgres"]["pooler"]
    barrier = threading.Barrier(clients, timeout=30)

    def one_client(_: int) -> int:
        with pg_connect(phase, url, prepare_threshold=None) as conn:
            barrier.wait()  # every client connected at once before anyone queries
            row = conn.execute("SELECT 1 FROM pg_sleep(0.1)").fetchone()
            return int(row[0]) if row else 0

    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            with contextlib.suppress(psycopg.Error):
                peak = max(peak, _pool_servers(phase))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool_exec:
            results = list(pool_exec.map(one_client, range(clients), timeout=60))
    finally:
        stop.set()
        watcher.join(5)
    elapsed = time.monotonic() - started
    assert results == [1] * clients
    assert 0 < peak <= pool, f"PgBouncer opened {peak} server connections for a pool of {pool}"
    print(
        f"\n[{phase.spec.phase}] PgBouncer: {clients} concurrent clients over a pool of "
        f"{pool}: 0 errors in {elapsed:.2f}s, peak {peak} server connections"
    )


def redis_data_nodes(phase: Phase) -> list[tuple[str, int]]:
    info = phase.summary["redis"]
    if info["mode"] == "standalone":
        parts = urlsplit(info["url"])
        return [(str(parts.hostname), int(parts.port or 6379))]
    return [(host, int(port)) for host, port in (n.rsplit(":", 1) for n in info["nodes"])]


def check_redis_memory_policy(phase: Phase) -> None:
    expected = phase.spec.redis.memory_per_node_mb * 1024 * 1024
    for host, port in redis_data_nodes(phase):
        client = phase.redis_client(host, port)
        try:
            assert client.config_get("maxmemory") == {"maxmemory": str(expected)}
            assert client.config_get("maxmemory-policy") == {
                "maxmemory-policy": phase.spec.redis.eviction_policy
            }
        finally:
            client.close()


def redis_replication(phase: Phase, name: str) -> dict[str, Any]:
    entry = phase.run.entry(name)
    client = phase.redis_client(entry.host, int(entry.port or 0))
    try:
        return dict(client.info("replication"))
    finally:
        client.close()


def check_redis_replicas_follow_topology(phase: Phase) -> None:
    """Each Redis replica of the topology replicates its replica_of (INFO replication)."""
    topology = local_topology(phase.spec)
    pairs = [(n.name, n.replica_of) for n in topology.tier("redis") if n.replica_of]
    assert pairs, "no Redis replica in this topology"

    def follows(replica: str, master: str) -> bool:
        info = redis_replication(phase, replica)
        return (
            info["role"] == "slave"
            and int(info["master_port"]) == phase.run.entry(master).port
            and info["master_link_status"] == "up"
        )

    for replica, master in pairs:
        wait_for(f"{replica} replicates {master}", partial(follows, replica, master), 15)
    print(f"\n[{phase.spec.phase}] Redis replicas follow the topology: {pairs}")


def check_fanout_across_gateways(phase: Phase) -> None:
    gateways = len(phase.summary["gateways"])
    base = phase.nginx_ws

    async def scenario() -> tuple[str, str, float]:
        trip = f"trip-{new_marker()[:12]}"
        rider_token, driver_token = phase.token("rider", trip), phase.token("driver", trip)
        ids = await client_ids_on_distinct_gateways(base, min(2, gateways), rider_token)
        rider_id, driver_id = (list(ids) * 2)[:2]
        rider, rider_gw = await open_client(base, rider_id, rider_token)
        driver, driver_gw = await open_client(base, driver_id, driver_token)
        try:
            await subscribe(rider, trip)
            waited = await deliver(driver, rider, trip, 10)
        finally:
            await rider.close()
            await driver.close()
        return rider_gw, driver_gw, waited

    rider_gw, driver_gw, waited = run_async(scenario())
    if gateways > 1:
        assert rider_gw != driver_gw
    print(
        f"\n[{phase.spec.phase}] location from {driver_gw} reached a rider on {rider_gw} "
        f"in {waited * 1000:.0f} ms"
    )


def check_sticky_and_status(phase: Phase) -> None:
    base = phase.nginx_ws

    token = phase.token("rider", "trip-sticky")

    async def landings(client_id: str, times: int) -> set[str]:
        seen = set()
        for _ in range(times):
            ws, gateway = await open_client(base, client_id, token)
            await ws.close()
            seen.add(gateway)
        return seen

    for client_id in ("rider-sticky-1", "rider-sticky-2", "driver-sticky-3"):
        assert len(run_async(landings(client_id, 4))) == 1, client_id
    status = httpx.get(phase.summary["nginx"]["status_url"], timeout=5)
    assert status.status_code == 200 and "Active connections" in status.text
    public = httpx.get(phase.summary["nginx"]["url"] + "/nginx_status", timeout=5)
    assert "Active connections" not in public.text
    assert httpx.get(phase.summary["nginx"]["url"] + "/healthz", timeout=5).status_code == 200


def check_replica_restart_catches_up(phase: Phase) -> None:
    """A replica stopped (Patroni stops its PostgreSQL) and started again has every row
    written meanwhile."""
    pg = phase.summary["postgres"]
    run = phase.run
    name = current_replicas(phase)[0]
    replica = next(m["url"] for m in pg["members"] if m["name"] == name)
    assert run.stop_process(name) == "stopped"
    markers = [new_marker() for _ in range(20)]
    with pg_connect(phase, pg["primary"], autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS trips (id text PRIMARY KEY, at timestamptz DEFAULT now())"
        )
        for marker in markers:
            conn.execute("INSERT INTO trips (id) VALUES (%s)", (marker,))
    started = time.monotonic()
    run.start_process(name)
    wait_for(
        "restarted replica has every row written while it was down",
        lambda: (
            pg_value(phase, replica, "SELECT count(*) FROM trips WHERE id = ANY(%s)", markers)
            == len(markers)
        ),
        60,
    )
    assert pg_value(phase, replica, "SELECT pg_is_in_recovery()") is True
    print(
        f"\n[{phase.spec.phase}] replica {name} restarted and caught up with 20 rows in "
        f"{time.monotonic() - started:.2f}s"
    )


def check_gateway_killed_clients_resume(phase: Phase) -> None:
    base = phase.nginx_ws
    run = phase.run

    async def scenario() -> tuple[str, str, float]:
        trip = f"trip-{new_marker()[:12]}"
        rider_token, driver_token = phase.token("rider", trip), phase.token("driver", trip)
        ids = await client_ids_on_distinct_gateways(base, 2, rider_token)
        (rider_id, victim), (driver_id, _) = list(ids.items())
        rider, _ = await open_client(base, rider_id, rider_token)
        driver, driver_gw = await open_client(base, driver_id, driver_token)
        await subscribe(rider, trip)
        await deliver(driver, rider, trip, 10)
        run.kill_process(victim)  # SIGKILL: no drain, the socket just dies
        killed = time.monotonic()
        try:
            await asyncio.wait_for(rider.wait_closed(), 15)
        except TimeoutError:
            await rider.close()
        # The app reconnects with the same client_id; Nginx skips the dead gateway.
        rider2, new_gw = await open_client(base, rider_id, rider_token)
        await subscribe(rider2, trip)
        await deliver(driver, rider2, trip, 10)
        resumed = time.monotonic() - killed
        await rider2.close()
        await driver.close()
        assert driver_gw != victim
        return victim, new_gw, resumed

    victim, new_gw, resumed = run_async(scenario(), 60)
    assert new_gw != victim
    print(
        f"\n[{phase.spec.phase}] {victim} killed: rider reconnected to {new_gw} and got "
        f"updates again {resumed:.2f}s after the kill"
    )
    run.start_process(victim)
    health_url = next(g["health_url"] for g in phase.summary["gateways"] if g["id"] == victim)
    wait_for(
        f"{victim} healthy again", lambda: httpx.get(health_url, timeout=2).status_code == 200, 30
    )


def check_down_leaves_nothing(phase: Phase) -> None:
    pids = run_pids(phase.run)
    assert len(pids) >= len(phase.run.state.processes)
    report = phase.run.down()
    assert {row["name"] for row in report} == {p.name for p in phase.run.state.processes}
    wait_for("no process of the run is left", lambda: not still_alive(pids), 10)
    assert not _state_dir(phase).exists()


def _sentinel_master(phase: Phase) -> tuple[str, int]:
    info = phase.summary["redis"]
    for address in info["sentinels"]:
        host, port = address.rsplit(":", 1)
        client = phase.redis_client(host, int(port), timeout=2)
        try:
            found = client.sentinel_get_master_addr_by_name(info["master_name"])
        except redis.RedisError:
            continue
        finally:
            client.close()
        if found:
            return str(found[0]), int(found[1])
    raise AssertionError("no sentinel answered")


def check_sentinel_failover(phase: Phase, keys: int = 200) -> None:
    """kill -9 the master: a replica is promoted, no write acknowledged by WAIT is lost and
    the gateways keep fanning out."""
    base = phase.nginx_ws
    old_host, old_port = _sentinel_master(phase)
    master = phase.redis_client(old_host, old_port)
    prefix = f"ack:{new_marker()[:8]}"
    acknowledged = []
    try:
        for index in range(keys):
            master.set(f"{prefix}:{index}", str(index))
            # WAIT 1 <timeout>: the write is acknowledged once a replica has it.
            if int(master.execute_command("WAIT", 1, 1000)) >= 1:
                acknowledged.append(index)
    finally:
        master.close()
    assert len(acknowledged) == keys
    victim = next(
        p.name
        for p in phase.run.state.processes
        if p.tier == "redis" and p.role != "sentinel" and p.port == old_port
    )

    async def scenario() -> tuple[float, float, float]:
        trip = f"trip-{new_marker()[:12]}"
        rider_token, driver_token = phase.token("rider", trip), phase.token("driver", trip)
        ids = await client_ids_on_distinct_gateways(base, 2, rider_token)
        rider_id, driver_id = list(ids)
        rider, _ = await open_client(base, rider_id, rider_token)
        driver, _ = await open_client(base, driver_id, driver_token)
        await subscribe(rider, trip)
        await deliver(driver, rider, trip, 10)
        phase.run.kill_process(victim)
        killed = time.monotonic()
        promoted = await asyncio.to_thread(
            wait_for,
            "a sentinel reports a new master",
            lambda: _sentinel_master(phase) != (old_host, old_port),
            60,
            0.1,
        )
        new_host, new_port = _sentinel_master(phase)
        new_master = phase.redis_client(new_host, new_port)
        try:
            writable = await asyncio.to_thread(
                wait_for,
                "the promoted replica accepts writes",
                lambda: bool(new_master.set(f"{prefix}:after", "1")),
                30,
                0.1,
            )
            values = new_master.mget([f"{prefix}:{i}" for i in acknowledged])
        finally:
            new_master.close()
        lost = [i for i, v in zip(acknowledged, values, strict=True) if v != str(i)]
        assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
        await deliver(driver, rider, trip, 30)
        fanout_back = time.monotonic() - killed
        await rider.close()
        await driver.close()
        return promoted, promoted + writable, fanout_back

    promoted, writable, fanout_back = run_async(scenario(), 120)
    print(
        f"\n[{phase.spec.phase}] Sentinel failover after kill -9 of {victim}: new master "
        f"reported in {promoted:.2f}s, writable in {writable:.2f}s, {len(acknowledged)} "
        f"WAIT-acknowledged keys all present, fan-out across gateways working "
        f"{fanout_back:.2f}s after the kill"
    )


def check_cluster_failover(phase: Phase, keys: int = 300) -> None:
    from redis.cluster import ClusterNode, RedisCluster

    nodes = [ClusterNode(h, int(p)) for h, p in redis_data_nodes(phase)]

    def cluster() -> RedisCluster:
        return RedisCluster(
            startup_nodes=nodes,
            password=phase.redis_password,
            decode_responses=True,
            socket_timeout=2,
            socket_connect_timeout=1,
        )

    rc = cluster()
    prefix = f"k{new_marker()[:8]}"
    try:
        for index in range(keys):
            rc.set(f"{prefix}:{index}", str(index))
        victim_node = rc.get_node_from_key(f"{prefix}:0")
        victim_port = int(victim_node.port)
    finally:
        rc.close()

    def replicas_caught_up() -> bool:
        for host, port in redis_data_nodes(phase):
            node = redis.Redis(
                host=host, port=port, password=phase.redis_password, socket_timeout=2
            )
            try:
                info = node.info("replication")
            finally:
                node.close()
            if info["role"] != "master":
                continue
            offsets = [
                v["offset"]
                for k, v in info.items()
                if k.startswith("slave") and isinstance(v, dict)
            ]
            if not offsets or min(offsets) < info["master_repl_offset"]:
                return False
        return True

    wait_for("every replica has its master's writes", replicas_caught_up, 15, 0.1)
    victim = next(
        p.name for p in phase.run.state.processes if p.tier == "redis" and p.port == victim_port
    )
    phase.run.kill_process(victim)
    killed = time.monotonic()
    alive_nodes = [(h, p) for h, p in redis_data_nodes(phase) if p != victim_port]

    def promoted() -> bool:
        host, port = alive_nodes[0]
        node = phase.redis_client(host, port, timeout=2)
        try:
            info = node.execute_command("CLUSTER", "INFO")
        finally:
            node.close()
        return "cluster_state:ok" in str(info) and _slot_owner_alive(phase, alive_nodes, prefix)

    takeover = wait_for("a replica takes over the killed master's slots", promoted, 60, 0.1)
    rc = cluster()
    try:
        values = [rc.get(f"{prefix}:{i}") for i in range(keys)]
    finally:
        rc.close()
    missing = [i for i, v in enumerate(values) if v != str(i)]
    assert not missing, f"{len(missing)} keys unreadable after failover: {missing[:10]}"
    print(
        f"\n[{phase.spec.phase}] Redis Cluster: kill -9 of master {victim}; its replica "
        f"took over in {takeover:.2f}s; all {keys} keys readable "
        f"({time.monotonic() - killed:.2f}s after the kill)"
    )


def _slot_owner_alive(phase: Phase, alive: list[tuple[str, int]], prefix: str) -> bool:
    host, port = alive[0]
    node = phase.redis_client(host, port, timeout=2)
    try:
        slot = int(node.execute_command("CLUSTER", "KEYSLOT", f"{prefix}:0"))
        for start, end, primary, *_ in node.execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return (str(primary[0]), int(primary[1])) in alive
    finally:
        node.close()
    return False


def check_gateway_auth_through_nginx(phase: Phase) -> None:
    """The run's gateways demand tokens behind Nginx: the key `local up` wrote (0600) signs
    tokens they accept, also through `sikka-scaling token`; no token, a rider publishing
    and a stranger's driver are refused; /metrics is not public."""
    import subprocess
    import sys
    from pathlib import Path

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    auth = phase.summary["gateway_auth"]
    assert (auth["mode"], auth["algorithms"]) == ("required", ["HS256"])
    key_file = Path(auth["key_file"])
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() == phase.run.secrets["gateway-jwt-secret"]
    base = phase.nginx_ws
    trip = f"trip-{new_marker()[:12]}"
    minted = subprocess.run(
        [
            sys.executable,
            "-m",
            "scaling.cli",
            "token",
            *("--stack", phase.run.state.stack, "--state-dir", phase.run.state.state_dir),
            *("--sub", "cli-rider", "--role", "rider", "--trip", trip),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with connect(f"{base}?client_id=anon", open_timeout=5) as anonymous:
            try:
                await asyncio.wait_for(anonymous.recv(), 5)
            except ConnectionClosed as closed:
                seen["anonymous"] = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None
        rider, _ = await open_client(base, "auth-rider", minted)
        driver, _ = await open_client(base, "auth-driver", phase.token("driver", trip))
        stranger, _ = await open_client(base, "auth-stranger", phase.token("driver", "other"))
        try:
            await subscribe(rider, trip)
            for name, ws in (("rider_publish", rider), ("stranger_publish", stranger)):
                await send_location(ws, trip, lat=0.0)
                seen[name] = (await recv_json(ws))["error"]
            seen["delivered"] = await deliver(driver, rider, trip, 10)
        finally:
            for ws in (rider, driver, stranger):
                await ws.close()
        return seen

    seen = run_async(scenario())
    assert seen["anonymous"] == (4401, "missing token")
    assert seen["rider_publish"] == "forbidden: a rider may not publish locations"
    assert seen["stranger_publish"] == f"forbidden: trip '{trip}' is not in your token"
    public = httpx.get(phase.summary["nginx"]["url"] + "/metrics", timeout=5)
    assert public.status_code == 404 and "gateway_" not in public.text
    for gateway in phase.summary["gateways"]:
        scraped = httpx.get(gateway["metrics_url"], timeout=5)
        assert scraped.status_code == 200 and "gateway_open_connections" in scraped.text
        assert httpx.get(gateway["live_url"], timeout=5).status_code == 200
    print(
        f"\n[{phase.spec.phase}] tokens: anonymous closed 4401, rider publish and stranger "
        f"refused, driver delivered in {seen['delivered'] * 1000:.0f} ms"
    )


# ------------------------------------------------------------------------ monitoring

# Prometheus picks its targets up within 5 s of starting, then scrapes every 5 s locally.
MONITORING_TIMEOUT = 60.0


def _prometheus(phase: Phase, path: str, **params: str) -> Any:
    url = phase.summary["prometheus"]["url"] + path
    reply = httpx.get(url, params=params, timeout=10)
    reply.raise_for_status()
    body = reply.json()
    assert body["status"] == "success", body
    return body["data"]


def prometheus_query(phase: Phase, query: str) -> list[tuple[dict[str, str], float]]:
    """An instant query's series: (labels, value)."""
    data = _prometheus(phase, "/api/v1/query", query=query)
    return [(row["metric"], float(row["value"][1])) for row in data["result"]]


def expected_targets(phase: Phase) -> set[tuple[str, str, str]]:
    """(job, instance, worker) of every target the topology says Prometheus scrapes."""
    topology = local_topology(phase.spec)
    return {
        (job.name, target.node, "" if target.worker is None else str(target.worker))
        for job in monitoring_jobs(topology)
        for target in job.targets
    }


def check_monitoring_targets_up(phase: Phase) -> float:
    """Every target of the topology's scrape jobs is scraped and up; returns the wait."""
    expected = expected_targets(phase)

    def scraped() -> set[tuple[str, str, str]]:
        active = _prometheus(phase, "/api/v1/targets", state="active")["activeTargets"]
        return {
            (t["labels"]["job"], t["labels"]["instance"], t["labels"].get("worker", ""))
            for t in active
            if t["health"] == "up"
        }

    waited = wait_for("every scrape target is up", lambda: scraped() >= expected, 60)
    active = _prometheus(phase, "/api/v1/targets", state="active")["activeTargets"]
    down = [(t["scrapeUrl"], t["lastError"]) for t in active if t["health"] != "up"]
    assert not down, down
    assert scraped() == expected
    # The phase's parts, counted from the spec (not from the same list the runner used).
    jobs: dict[str, int] = {}
    for job, _, _ in expected:
        jobs[job] = jobs.get(job, 0) + 1
    spec = phase.spec
    assert jobs["gateway"] == spec.gateway.replicas * spec.gateway.processes
    members = nodes(local_topology(spec), "postgres", "primary", "replica")
    assert jobs["postgres"] == len(members) == 1 + spec.postgres.read_replicas
    sentinels = phase.summary["redis"].get("sentinels", [])
    assert jobs["redis"] == len(redis_data_nodes(phase)) + len(sentinels)
    poolers = spec.pooler.replicas if spec.pooler.enabled else 0
    assert jobs.get("pgbouncer", 0) == poolers
    assert jobs["nginx"] == 1 and jobs["node"] == 1
    return waited


def check_monitoring_rules_loaded(phase: Phase) -> None:
    """Prometheus evaluates the phase's alert rules (alerts.yml, from its thresholds)."""
    groups = _prometheus(phase, "/api/v1/rules", type="alert")["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    wanted = {r["alert"] for group in alert_rules(phase.spec)["groups"] for r in group["rules"]}
    assert set(loaded) == wanted
    assert {"HostCpuHigh", "PostgresConnectionsHigh", "GatewayConnectionsHigh"} <= wanted
    for rule in loaded.values():
        assert rule["labels"]["phase"] == phase.spec.phase.value
        assert rule["health"] in ("ok", "unknown"), rule  # "unknown" until first evaluated
        assert rule["duration"] == 600  # sustained for 10 minutes


def check_monitoring_values(phase: Phase) -> None:
    """Each exporter's series hold what the servers say (read from the servers directly)."""
    spec = phase.spec
    instances = {
        job: {node for j, node, _ in expected_targets(phase) if j == job}
        for job in ("postgres", "redis", "gateway", "nginx", "pgbouncer")
    }

    def by_instance(query: str) -> dict[str, float]:
        return {labels["instance"]: value for labels, value in prometheus_query(phase, query)}

    assert by_instance("pg_up") == dict.fromkeys(instances["postgres"], 1.0)
    assert by_instance("pg_settings_max_connections") == dict.fromkeys(
        instances["postgres"], float(spec.postgres.max_connections)
    )
    assert by_instance("redis_up") == dict.fromkeys(instances["redis"], 1.0)
    memory = float(spec.redis.memory_per_node_mb * 1024 * 1024)
    data = {n.name for n in nodes(local_topology(spec), "redis", *REDIS_DATA_ROLES)}
    assert data and data <= instances["redis"]
    maxmemory = by_instance("redis_memory_max_bytes")
    assert {name: maxmemory[name] for name in data} == dict.fromkeys(data, memory)
    assert by_instance("nginx_up") == dict.fromkeys(instances["nginx"], 1.0)
    # The exporter's own request to stub_status is an active connection.
    assert all(v >= 1 for v in by_instance("nginx_connections_active").values())
    total = prometheus_query(phase, "node_memory_MemTotal_bytes")
    assert [value for _, value in total] == [float(psutil.virtual_memory().total)]
    cpus = prometheus_query(phase, 'count(node_cpu_seconds_total{mode="idle"})')
    assert [value for _, value in cpus] == [float(psutil.cpu_count())]
    gateways = prometheus_query(phase, "gateway_open_connections")
    assert {labels["instance"] for labels, _ in gateways} == instances["gateway"]
    assert all(value >= 0 for _, value in gateways)
    if instances["pgbouncer"]:
        assert by_instance("pgbouncer_up") == dict.fromkeys(instances["pgbouncer"], 1.0)
        shares = [process_share(spec, k) for k in range(spec.pooler.processes)]
        limits = by_instance("pgbouncer_config_max_client_connections")
        assert limits == dict.fromkeys(instances["pgbouncer"], float(shares[0].max_client_conn))
        # Each scrape reaches one of the pooler's processes, each with its share of the pool.
        pools = by_instance(f'pgbouncer_databases_pool_size{{name="{spec.postgres.database}"}}')
        assert set(pools) == instances["pgbouncer"]
        assert set(pools.values()) <= {float(share.default_pool_size) for share in shares}


def check_monitoring_keeps_secrets(phase: Phase) -> None:
    """No secret on an exporter's or Prometheus's command line, in their files or logs."""
    state = Path(phase.run.state.state_dir)
    secrets = [value for value in phase.run.secrets.values() if value]
    monitoring = [p for p in phase.run.state.processes if p.tier == "monitoring"]
    assert monitoring
    for entry in monitoring:
        command = " ".join(psutil.Process(entry.pid).cmdline())
        assert not [s for s in secrets if s in command], entry.name
        log = Path(entry.log).read_text(errors="replace")
        assert not [s for s in secrets if s in log], entry.log
    for written in (state / "prometheus").glob("*.yml"):
        text = written.read_text()
        assert not [s for s in secrets if s in text], written

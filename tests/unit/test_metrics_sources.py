"""The pure halves of the checker's sources: parsing what each part answers, endpoints
from a `local up --json` document, the history file, and the PromQL table.
(The probes themselves run against real servers: tests/integration/test_check_*.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from scaling.metrics import direct, history
from scaling.metrics import endpoints as ep
from scaling.metrics.model import Reading, Sample
from scaling.metrics.probes import gateway, nginx, pgbouncer
from scaling.metrics.probes import redis as redis_probe
from scaling.metrics.queries import measure, measures
from scaling.stackconfig import parse

STUB_STATUS = """Active connections: 291
server accepts handled requests
 16630948 16630948 31070465
Reading: 6 Writing: 179 Waiting: 106
"""


def test_stub_status_parsed() -> None:
    assert nginx.parse(STUB_STATUS) == {"active": 291, "reading": 6, "writing": 179, "waiting": 106}
    with pytest.raises(nginx.StubStatusError, match="not a stub_status page"):
        nginx.parse("<html>502 Bad Gateway</html>")


def _exposition(open_: float, limit: float | None, trips: float, sent: float) -> str:
    registry = CollectorRegistry()
    Gauge("gateway_open_connections", "", registry=registry).set(open_)
    if limit is not None:
        Gauge("gateway_connection_limit", "", registry=registry).set(limit)
    Gauge("gateway_active_trips", "", registry=registry).set(trips)
    out = Counter("gateway_messages_out", "", ["type"], registry=registry)
    out.labels("location").inc(sent)
    out.labels("welcome").inc(1)
    Counter("gateway_messages_in", "", ["type"], registry=registry).labels("location").inc(2)
    return generate_latest(registry).decode()


def test_gateway_metrics_sum_over_labels() -> None:
    found = gateway.parse(_exposition(7, 500, 3, 40))
    assert found["gateway_open_connections"] == 7
    assert found["gateway_messages_out_total"] == 41  # location + welcome
    assert found["gateway_connection_limit"] == 500


def test_gateway_processes_add_up_but_share_one_cap() -> None:
    first = [gateway.parse(_exposition(5, 900, 2, 10)), gateway.parse(_exposition(4, 900, 1, 0))]
    second = [gateway.parse(_exposition(6, 900, 2, 30)), gateway.parse(_exposition(4, 900, 1, 20))]
    readings, notes = gateway.readings_from("gw:9102", first, second, 2.0, fallback_limit=100)
    by_key = {r.key: r for r in readings}
    assert by_key["gateway.connections"].value == 10
    assert by_key["gateway.connections"].limit == 900  # the shared cap, not 1800, not 100
    assert by_key["gateway.active_trips"].value == 3
    assert by_key["gateway.messages_out"].value == pytest.approx((50 - 10) / 2.0)
    assert by_key["gateway.messages_in"].value == 0
    assert notes == []


def test_gateway_without_its_cap_is_judged_against_the_stack() -> None:
    scrape = [gateway.parse(_exposition(5, None, 0, 0))]
    readings, notes = gateway.readings_from("gw:9102", scrape, scrape, 1.0, fallback_limit=500)
    assert readings[0].limit == 500
    assert notes == [
        "gateway gw:9102: exports no gateway_connection_limit; judged against the stack's "
        "gateway.connectionsPerReplica (500)"
    ]


def test_gateway_page_without_connections_is_unreachable() -> None:
    page = [gateway.parse("# a page of something else\nup 1\n")]
    readings, _ = gateway.readings_from("gw:9102", page, page, 1.0, 500)
    assert readings[0].value is None and readings[0].error is not None
    assert "gateway_open_connections" in readings[0].error


def test_pgbouncer_pools_count_clients_of_every_pool_but_the_console() -> None:
    pools = [
        {"database": "sikka", "user": "sikka", "cl_active": 12, "cl_waiting": 3,
         "cl_active_cancel_req": 0, "cl_waiting_cancel_req": 0, "maxwait": 1,
         "maxwait_us": 500000, "sv_active": 5},
        {"database": "sikka_ro", "user": "sikka", "cl_active": 4, "cl_waiting": 0,
         "maxwait": 0, "maxwait_us": 0},
        {"database": "pgbouncer", "user": "pgbouncer", "cl_active": 1, "cl_waiting": 0,
         "maxwait": 0, "maxwait_us": 0},
    ]  # fmt: skip
    assert pgbouncer.pool_figures(pools) == (19, 3, 1.5)
    config = [{"key": "max_client_conn", "value": "1000", "default": "100", "changeable": "yes"}]
    assert pgbouncer.config_value(config, "max_client_conn") == "1000"
    stats = [{"database": "sikka", "avg_wait_time": 2500}, {"database": "pgbouncer",
             "avg_wait_time": 99000}]  # fmt: skip
    assert pgbouncer.average_wait_ms(stats) == 2.5


def test_redis_info_readings() -> None:
    info = {"used_memory": 1_048_576, "maxmemory": 268_435_456, "connected_clients": 12,
            "maxclients": 1000, "evicted_keys": 4, "keyspace_hits": 90, "keyspace_misses": 10}  # fmt: skip
    by_key = {r.key: r for r in redis_probe.info_readings("127.0.0.1:6379", info)}
    assert by_key["redis.memory"].percent == pytest.approx(100 / 256)
    assert by_key["redis.clients"].percent == pytest.approx(1.2)
    assert by_key["redis.evicted_keys"].value == 4
    assert by_key["redis.hit_ratio"].value == 0.9
    unbounded = redis_probe.info_readings("n", {**info, "maxmemory": 0, "keyspace_hits": 0,
                                                "keyspace_misses": 0})  # fmt: skip
    memory = next(r for r in unbounded if r.key == "redis.memory")
    assert memory.limit is None and memory.percent is None  # reported, not judged
    assert "redis.hit_ratio" not in {r.key for r in unbounded}  # no lookups yet: no ratio


GROWTH_SUMMARY = {
    "stack": "growth",
    "secrets_file": "/nowhere/secrets.json",
    "nginx": {"status_url": "http://127.0.0.1:8081/nginx_status"},
    "gateways": [
        {"id": "gateway-0", "metrics_url": "http://127.0.0.1:9102/metrics"},
        {"id": "gateway-1", "metrics_url": "http://127.0.0.1:9202/metrics"},
    ],
    "postgres": {
        "primary": "postgresql://sikka@127.0.0.10:5432,127.0.0.11:5432/sikka",
        "replicas": ["postgresql://sikka@127.0.0.11:5432/sikka"],
        "members": [
            {"name": "pg-0", "url": "postgresql://sikka@127.0.0.10:5432/sikka"},
            {"name": "pg-1", "url": "postgresql://sikka@127.0.0.11:5432/sikka"},
        ],
        "pooler": "postgresql://sikka@127.0.0.20:6432,127.0.0.21:6432/sikka",
    },
    "database": {"name": "sikka", "superuser": "postgres", "pooler_admin": "pgbouncer_admin"},
    "redis": {
        "mode": "sentinel",
        "sentinels": ["127.0.0.1:26379", "127.0.0.1:26380"],
        "nodes": ["127.0.0.1:6379", "127.0.0.1:6380"],
        "master_name": "sikka",
    },
}


def test_endpoints_from_a_local_up_document() -> None:
    spec = parse({"sikka:phase": "growth", "sikka:gateway": {"processes": 2}}, stack="growth")
    secrets = {"postgres-superuser-password": "su", "redis-password": "rp",
               "pgbouncer-admin-password": "pa"}  # fmt: skip
    found = ep.from_summary(GROWTH_SUMMARY, secrets, spec)
    assert [str(h) for h in found.postgres] == ["127.0.0.10:5432", "127.0.0.11:5432"]
    assert [str(h) for h in found.poolers] == ["127.0.0.20:6432", "127.0.0.21:6432"]
    assert [str(h) for h in found.redis] == ["127.0.0.1:6379", "127.0.0.1:6380"]
    assert found.gateways == (
        ("http://127.0.0.1:9102/metrics", "http://127.0.0.1:9103/metrics"),
        ("http://127.0.0.1:9202/metrics", "http://127.0.0.1:9203/metrics"),
    )
    assert found.nginx == ("http://127.0.0.1:8081/nginx_status",)
    # A document that lists every worker's URL is taken at its word.
    listed = {**GROWTH_SUMMARY, "gateways": [{"metrics_url": "http://h:1/metrics",
              "worker_metrics_urls": ["http://h:1/metrics", "http://h:7/metrics"]}]}  # fmt: skip
    assert ep.from_summary(listed, {}, spec).gateways == (
        ("http://h:1/metrics", "http://h:7/metrics"),
    )
    assert (found.postgres_user, found.postgres_password) == ("postgres", "su")
    assert (found.pooler_user, found.pooler_password, found.redis_password) == (
        "pgbouncer_admin",
        "pa",
        "rp",
    )
    assert "su" not in repr(found) and "rp" not in repr(found)


def test_direct_readings_are_named_after_the_node_measured() -> None:
    """Every probed address of a `local up` document maps to its topology node: the name
    Prometheus's ``instance`` label carries, so both sources name a part alike."""
    processes = [
        {"name": "pgbouncer-0", "tier": "postgres", "host": "127.0.0.20", "port": 6432},
        {"name": "pgbouncer-0.1", "tier": "postgres", "host": "127.0.0.20", "port": 6432},
        {"name": "pgbouncer-1", "tier": "postgres", "host": "127.0.0.21", "port": 6432},
        {"name": "redis-0", "tier": "redis", "host": "127.0.0.1", "port": 6379},
        {"name": "redis-1", "tier": "redis", "host": "127.0.0.1", "port": 6380},
        {"name": "gateway-0", "tier": "gateway", "host": "127.0.0.1", "port": 9100},
        {"name": "nginx", "tier": "nginx", "host": "127.0.0.1", "port": 8080},
        {"name": "node-exporter", "tier": "monitoring", "host": "127.0.0.1", "port": 9300},
    ]
    found = ep.from_summary({**GROWTH_SUMMARY, "processes": processes}, {})
    assert found.host_name == "node-exporter"
    expected = {
        "127.0.0.10:5432": "pg-0",  # the Patroni members by their own names
        "127.0.0.11:5432": "pg-1",
        "127.0.0.20:6432": "pgbouncer-0",  # a pooler's first process names its address
        "127.0.0.21:6432": "pgbouncer-1",
        "127.0.0.1:6380": "redis-1",
        "127.0.0.1:9102": "gateway-0",  # its first worker's /metrics
        "127.0.0.1:8081": "nginx",  # its status address
    }
    assert {a: found.names[a] for a in expected} == expected

    def named(key: str, tier: str, instance: str) -> str:
        reading = Reading(key, tier, instance, 1.0, None, "x")
        return direct.node_instance(reading, found).instance

    assert named("postgres.connections", "postgres", "127.0.0.11:5432") == "pg-1"
    assert named("postgres.replica_lag_bytes", "postgres", "127.0.0.10:5432/pg-1") == "pg-0/pg-1"
    assert named("host.cpu", "host", "some-machine") == "node-exporter"
    assert named("redis.memory", "redis", "10.0.0.9:6379") == "10.0.0.9:6379"  # not in the run
    # A document without processes (an older one, or hand-written) keeps the addresses.
    bare = ep.from_summary(GROWTH_SUMMARY, {})
    assert bare.host_name is None
    assert (
        direct.node_instance(Reading("host.cpu", "host", "m", 1.0, None, "%"), bare).instance == "m"
    )


def test_endpoints_document_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ep.EndpointsError, match=r"endpoints document: redis is missing"):
        ep.from_summary({"postgres": {"primary": "postgresql://u@h:1/d"}}, {})
    bad = tmp_path / "up.json"
    bad.write_text("{not json")
    with pytest.raises(ep.EndpointsError, match=r"up.json: not JSON"):
        ep.from_document(bad)
    bad.write_text(json.dumps({"stack": "x"}))
    with pytest.raises(ep.EndpointsError, match=r"not a `local up --json` document"):
        ep.from_document(bad)
    with pytest.raises(ep.EndpointsError, match=r"no running local phase in .*state.json"):
        ep.from_local_state(tmp_path / "nothing")
    with pytest.raises(ep.EndpointsError, match=r"--postgres: expected host:port, got 'db'"):
        ep.parse_hostport("db", "--postgres")


def _sample(at: float, value: float | None) -> Sample:
    return Sample(at, "direct", (Reading("host.cpu", "host", "h", value, 100.0, "percent"),))


def test_history_appends_and_skips_a_damaged_line_without_rewriting(tmp_path: Path) -> None:
    path = tmp_path / "state" / history.HISTORY_FILE
    history.append(path, _sample(100.0, 10.0))
    with path.open("a") as f:
        f.write('{"at": 150, "source": "direct", "readi')  # a write cut short
        f.write("\n")
    history.append(path, _sample(200.0, None))
    history.append(path, _sample(300.0, 30.0))
    raw = path.read_text()
    found = history.read(path, since=150.0)
    assert [s.at for s in found.samples] == [200.0, 300.0]
    assert found.samples[0].readings[0].value is None
    assert len(found.damaged) == 1 and found.damaged[0].startswith("line 2: sample: not JSON")
    assert path.read_text() == raw  # reading never rewrites
    assert (path.stat().st_mode & 0o777) == 0o600
    assert history.read(tmp_path / "none.jsonl").samples == ()


@pytest.mark.parametrize("phase", ["launch", "growth", "scale"])
def test_every_judged_measure_is_a_percentage(phase: str) -> None:
    spec = parse({"sikka:phase": phase}, stack=phase)
    keys = [m.key for m in measures(spec)]
    assert len(keys) == len(set(keys))
    for m in measures(spec):
        if m.limit is not None:
            assert m.percent().startswith("100 * (") or m.unit == "percent"
    nginx_percent = measure(spec, "nginx.connections").percent()
    assert nginx_percent.endswith(f"/ {spec.nginx.instance_capacity}")
    gateway_percent = measure(spec, "gateway.connections").percent()
    assert f"+ {spec.gateway.connections_per_replica}" in gateway_percent
    with pytest.raises(ValueError, match=r"gateway\.active_trips has no limit"):
        measure(spec, "gateway.active_trips").percent()


def test_redis_readings_leave_the_sentinels_out() -> None:
    """The redis job scrapes the Sentinels too; their clients and evictions are no data
    node's, and the direct check does not read them: every Redis measure leaves them out
    (redis.memory by itself: a Sentinel reports no used_memory)."""
    spec = parse({"sikka:phase": "growth"}, stack="growth")
    for key in ("redis.clients", "redis.evicted_keys"):
        assert measure(spec, key).value.endswith(
            'unless on (instance) redis_instance_info{redis_mode="sentinel"}'
        )

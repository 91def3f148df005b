"""The pooler benchmark's pure parts: how a multi-host DSN is split over pgbench runs and how
rounds are summarised (the benchmark itself runs against real servers and prints figures)."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from benchmarks.pooler import (
    PgbenchError,
    PgbenchResult,
    cpu_per_transaction,
    parse_run,
    report,
    split_hosts,
    spread,
)


def test_a_multi_host_url_becomes_one_dsn_per_host() -> None:
    dsns = split_hosts("postgresql://sikka@127.0.3.1:6432,127.0.3.2:6433/sikka")
    assert [conninfo_to_dict(d) for d in dsns] == [
        {"user": "sikka", "host": "127.0.3.1", "port": "6432", "dbname": "sikka"},
        {"user": "sikka", "host": "127.0.3.2", "port": "6433", "dbname": "sikka"},
    ]


def test_one_port_serves_every_host() -> None:
    dsns = split_hosts("host=a,b port=6432 dbname=sikka")
    assert [conninfo_to_dict(d)["port"] for d in dsns] == ["6432", "6432"]


def test_spread_is_min_median_max() -> None:
    assert spread([0.9, 0.5, 0.7]) == {"min": 0.5, "median": 0.7, "max": 0.9}


def test_report_prints_every_variant_with_its_ratio() -> None:
    result = {
        "clients": 800,
        "direct_clients": 80,
        "rounds": 2,
        "seconds": 15.0,
        "threads": 2,
        "scale": 4,
        "baselines": ["direct"],
        "hosts": {"direct": 1, "pooler": 2},
        "workloads": {
            "select-only": {
                "tps": {"direct": [100.0, 200.0], "pooler": [90.0, 100.0]},
                "login_seconds": {"direct": [0.1, 0.2], "pooler": [1.0, 3.0]},
                "failed": {"direct": 0, "pooler": 2},
                "pooler_ratio": {"rounds": [0.9, 0.5], **spread([0.9, 0.5])},
                "pooler_login": spread([1.0, 3.0]),
            }
        },
    }
    text = report(result)
    assert "/ direct 0.50 0.70 0.90" in text
    assert "login 800 clients 1.00/2.00/3.00 s" in text
    assert "login 80 clients 0.10/0.15/0.20 s" in text
    assert "(2 failed transactions)" in text


def test_pgbench_output_is_parsed() -> None:
    out = (
        "number of transactions actually processed: 9000\n"
        "number of failed transactions: 2 (0.0%)\n"
        "initial connection time = 812.345 ms\n"
        "tps = 1234.567890 (without initial connection time)\n"
    )
    assert parse_run(out) == PgbenchResult(1234.56789, 0.812345, 2, 9000)
    # Clients still logging in when the run ended: nothing processed, a tps of 0.
    nothing = "initial connection time = 5100.0 ms\nnumber of transactions actually processed: 0\n"
    assert parse_run(nothing) == PgbenchResult(0.0, 5.1, 0)
    with pytest.raises(PgbenchError):
        parse_run("connection to server failed")


def test_cpu_is_counted_per_transaction_for_each_kind_of_process() -> None:
    start = {"postgres": 10.0, "pgbouncer": 1.0, "haproxy": 0.5, "other": 2.0}
    end = {"postgres": 12.0, "pgbouncer": 1.5, "haproxy": 0.5, "other": 2.0}
    assert cpu_per_transaction(start, end, client_cpu=1.0, transactions=10_000) == {
        "postgres": 200.0,
        "pgbouncer": 50.0,
        "haproxy": 0.0,
        "other": 0.0,
        "pgbench": 100.0,
    }
    # No transaction ran: nothing to divide.
    assert cpu_per_transaction(start, end, client_cpu=1.0, transactions=0) == {}


def test_report_prints_cpu_per_transaction_and_the_load() -> None:
    result = {
        "clients": 8,
        "direct_clients": 2,
        "rounds": 1,
        "seconds": 5.0,
        "threads": 2,
        "scale": 4,
        "baselines": ["direct"],
        "hosts": {"direct": 1, "pooler": 1},
        "workloads": {
            "select-only": {
                "tps": {"direct": [100.0], "pooler": [80.0]},
                "login_seconds": {"direct": [0.1], "pooler": [0.2]},
                "failed": {"direct": 0, "pooler": 0},
                "pooler_ratio": {"rounds": [0.8], **spread([0.8])},
                "pooler_login": spread([0.2]),
                "cpu_us_per_transaction": {
                    "direct": {"postgres": 90.0, "pgbench": 20.0},
                    "pooler": {"postgres": 80.0, "pgbouncer": 30.0, "haproxy": 0.0},
                },
                "load_average": spread([3.0, 5.0]),
            }
        },
    }
    text = report(result)
    assert "cpu us/transaction: postgres 90 pgbench 20" in text
    # A kind of process that used nothing is left out.
    assert "cpu us/transaction: postgres 80 pgbouncer 30\n" in text
    assert "load average (1 min) after the rounds: 3.0/4.0/5.0" in text

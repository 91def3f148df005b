"""Fixtures that start real Redis topologies on 127.0.0.1 for the gateway tests."""

from __future__ import annotations

import atexit
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `python -m pytest` from the repo root already puts it on sys.path; this keeps
# a bare `pytest tests/gateway` working too.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import gw_redis  # noqa: E402

# Last line of defence against leaked redis processes (e.g. on KeyboardInterrupt).
atexit.register(gw_redis.stop_all)


def pytest_configure(config: pytest.Config) -> None:
    # The lead registers this marker project-wide; registering it again is harmless.
    config.addinivalue_line(
        "markers", "integration: starts real redis-server/redis-sentinel processes"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    gw_redis.stop_all()


@pytest.fixture(scope="session")
def redis_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gw_redis.RedisProc]:
    rp = gw_redis.start("standalone", tmp_path_factory.mktemp("redis"), [])
    try:
        yield rp
    finally:
        rp.stop()


# Module scope: Sentinel convergence takes seconds. The failover test is the
# last test of its module because it kills the master.
@pytest.fixture(scope="module")
def sentinel_setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gw_redis.SentinelSetup]:
    setup = gw_redis.start_sentinel_setup(tmp_path_factory.mktemp("sentinel"))
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gw_redis.ClusterSetup]:
    setup = gw_redis.start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield setup
    finally:
        for node in setup.nodes:
            node.stop()


@pytest.fixture
def disposable_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[gw_redis.ClusterSetup]:
    """A cluster of its own for tests that kill nodes."""
    setup = gw_redis.start_cluster(tmp_path_factory.mktemp("cluster-failover"))
    try:
        yield setup
    finally:
        for node in setup.nodes:
            node.stop()

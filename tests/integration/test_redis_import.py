"""The Redis Cluster import of a transition's cut-over (scaling/render/redis_import.py) on
real servers.

Source: growth's Redis tier from the local runner (a master, its replica, three Sentinels);
target: scale's (3 masters + 3 replicas, formed by the topology's cluster script), one
password for both as a transition's target inherits it. The script is the text the Docker
one-shot and the Kubernetes Job run, with loopback in place of the hosts. A writer keeps
setting keys (each acknowledged by SET and WAIT 1) on the source, and on the target once
the import says it is done, as clients pointed at the target would.

Covered: refusal while the target is not formed, while it holds keys of its own, and when
a target master refuses the copy part-way (the source takes writes again, nothing is
promoted); the retry after that, which removes what the source deleted meanwhile; every
acknowledged key, binary keys, hashes and TTLs on the target; the source refusing writes
afterwards; a third run that finds the work done.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from local_helpers import tier_context
from redis.cluster import ClusterNode, RedisCluster
from transition_load import GAP_TARGET, RedisWriter

from scaling.local import LocalRun, runner
from scaling.local import redis as local_redis
from scaling.local.context import Context
from scaling.local.credentials import new_secrets
from scaling.render.endpoints import Endpoint
from scaling.render.redis_import import MARKER, redis_import_script

pytestmark = [pytest.mark.integration, pytest.mark.serial]

ROOT = Path(__file__).resolve().parents[2]
BULK = 2000  # keys on the source before the import, to measure the copy's rate
BINARY_KEY = b"bin\x00key\n\xff"
BINARY_VALUE = b"\x00\x01\xfe value \r\n"


def _context(
    stack: str, overrides: dict[str, object], base: Path, secrets: dict[str, str]
) -> Context:
    spec = runner.load_spec(ROOT / f"Pulumi.{stack}.yaml", overrides)
    (base / stack).mkdir()
    return tier_context(spec, base / stack, f"import-{stack}", secrets)


@dataclass
class Pair:
    source: Context
    target: Context

    @property
    def password(self) -> str:
        return self.source.secrets["redis-password"]

    @property
    def source_master(self) -> Endpoint:
        return self.source.endpoints["redis-0"]

    @property
    def masters(self) -> list[Endpoint]:
        return local_redis.cluster_layout(self.target)[0]

    def client(self, endpoint: Endpoint) -> redis.Redis:
        return redis.Redis(endpoint.host, endpoint.port, password=self.password, socket_timeout=5)

    def cluster(self) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(e.host, e.port) for e in self.masters],
            password=self.password,
            socket_timeout=5,
        )

    def run(
        self, seeds: list[Endpoint] | None = None, **options: int
    ) -> subprocess.CompletedProcess[str]:
        _, cli = local_redis.binaries(self.target.spec)
        script = redis_import_script(self.source_master, seeds or self.masters, cli=cli, **options)
        env = {
            "PATH": local_redis.engine_path(self.target),
            "REDIS_PASSWORD": self.password,
            "TMPDIR": str(self.target.state_dir),
        }
        done = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=300
        )
        assert self.password not in done.stdout + done.stderr
        return done

    def marker(self) -> str:
        with self.cluster() as cluster:
            value = cluster.get(MARKER)
        return value.decode() if value else ""

    def endpoints(self) -> list[tuple[str, int]]:
        """Where a client writes: the source until the import says it is done."""
        if self.marker().startswith("imported"):
            return [(e.host, e.port) for e in self.masters]
        return [(self.source_master.host, self.source_master.port)]


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    secrets = new_secrets()  # the target inherits the source's passwords
    source = _context("growth", {"redis": {"replicas": 1}}, tmp_path, secrets)
    target = _context("scale", {"redis": {"masters": 3, "maxMemoryMb": 256}}, tmp_path, secrets)
    try:
        local_redis.start_redis(source)
        local_redis.start_redis(target)
        yield Pair(source, target)
    finally:
        for context in (target, source):
            LocalRun(context.state, secrets).down()


def test_import_refuses_then_copies_every_key(pair: Pair) -> None:
    src = pair.client(pair.source_master)
    source_floor = src.config_get("min-replicas-to-write")["min-replicas-to-write"]
    pipe = src.pipeline(transaction=False)
    for index in range(BULK):
        pipe.set(f"bulk:{index}", f"value-{index}")
    pipe.execute()
    src.set(BINARY_KEY, BINARY_VALUE)
    src.hset("trip:42", mapping={"driver": "d-7", "rider": "r-9"})
    src.set("session:long", "kept", ex=3600)
    src.set("doomed", "deleted on the source between two runs")
    writer = RedisWriter(pair.endpoints, pair.password, interval=0.01)
    writer.start()
    try:
        time.sleep(1.0)

        # Not formed (nothing answers): refused before touching the source.
        closed = [Endpoint("127.0.0.1", 9)]
        refused = pair.run(closed, ready_seconds=2)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "is not formed" in refused.stderr and "source is untouched" in refused.stderr
        assert src.config_get("min-replicas-to-write")["min-replicas-to-write"] == source_floor

        # Keys of its own on the target: nothing is mixed into them.
        with pair.cluster() as cluster:
            cluster.set("its-own", "1")
            refused = pair.run()
            cluster.delete("its-own")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "holds 1 key(s) of its own" in refused.stderr, refused.stderr

        # A target master refuses writes (more good replicas wanted than it has): the copy
        # fails part-way, the source takes writes again.
        with pair.cluster() as cluster:
            marker_port = cluster.get_node_from_key(MARKER).port
        refusing = next(m for m in pair.masters if m.port != marker_port)
        floor = pair.client(refusing).config_get("min-replicas-to-write")["min-replicas-to-write"]
        pair.client(refusing).config_set("min-replicas-to-write", 5)
        acked_before = len(writer.figures.acknowledged)
        refused = pair.run()
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "the target refused" in refused.stderr and "NOREPLICAS" in refused.stderr
        assert "the source takes writes again" in refused.stderr
        assert pair.marker().startswith("copying from"), pair.marker()
        deadline = time.monotonic() + 10
        while len(writer.figures.acknowledged) < acked_before + 20:
            assert time.monotonic() < deadline, "the source took no write after the refusal"
            time.sleep(0.1)
        pair.client(refusing).config_set("min-replicas-to-write", floor)
        with pair.cluster() as cluster:
            assert cluster.get("doomed") is not None  # copied by the run that failed
        src.delete("doomed")

        started = time.monotonic()
        done = pair.run()
        took = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr
        assert "key(s) the source no longer holds removed" in done.stdout, done.stdout
        assert pair.marker().startswith("imported from"), pair.marker()
        time.sleep(1.5)  # the writer goes on, on the target
    finally:
        writer.stop()
    assert writer.crash is None, writer.crash
    figures = writer.figures
    assert figures.acknowledged, "the writer never got a key acknowledged"

    present = writer.present([(e.host, e.port) for e in pair.masters])
    assert present == figures.acknowledged, sorted(figures.acknowledged - present)[:20]
    assert writer.masters[0].startswith("127.0.0.1:") and writer.masters[-1].startswith("cluster")
    with pair.cluster() as cluster:
        assert cluster.get(BINARY_KEY) == BINARY_VALUE
        assert cluster.hgetall("trip:42") == {b"driver": b"d-7", b"rider": b"r-9"}
        assert 3500 < cluster.ttl("session:long") <= 3600
        assert cluster.get("doomed") is None
        assert cluster.get(f"bulk:{BULK - 1}") == f"value-{BULK - 1}".encode()
        held = sum(int(pair.client(m).dbsize()) for m in pair.masters) - 1  # the marker
    with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
        src.set("after", "refused")
    source_keys = int(src.dbsize())
    on_source = sum(int(src.exists(writer.key(seq))) for seq in figures.acknowledged)
    # The target: every key of the source, and those written on it afterwards.
    assert held == source_keys + len(figures.acknowledged) - on_source

    again = pair.run()
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    assert figures.longest_gap < GAP_TARGET, figures.timeline
    copied = next(line for line in done.stdout.splitlines() if "copied" in line)
    print(
        f"\n[redis import] {source_keys} source keys; import run {took:.2f} s: {copied.strip()}"
        f"\n[redis import] keys acknowledged {len(figures.acknowledged)}, present "
        f"{len(present)}; longest gap between acknowledged writes {figures.longest_gap:.2f} s "
        f"(refused {figures.failures}: {figures.errors})"
    )

"""The running phase a new phase starts as a replica of (a phase transition's target).

`local up --follow`-style starts (``runner.up(..., follow=Follow.of(source_run))``) differ
from a fresh start in the data tier only:

* secrets: the source's, all of them (scaling.local.credentials.inherited_secrets);
* PostgreSQL under Patroni: the cluster bootstraps as a *standby cluster* of the source's
  read-write door (``bootstrap.dcs.standby_cluster``, scaling.render.patroni): its first
  member clones the source with pg_basebackup as the replication role and streams from it;
  a single PostgreSQL (launch, a transition back to it): its data directory is a
  pg_basebackup of that door and it starts as a hot standby (``standby.signal``,
  ``primary_conninfo`` whose password is read from a 0600 password file owned by the
  postgres account; scaling.local.postgres.start_standby). Either way `up` waits for what
  can answer while nothing is writable (the standby leader, its replicas streaming,
  PgBouncer's read-only database or console), not for a read-write server;
* Redis (Sentinel or standalone target): the master starts with ``replicaof`` the source's
  master, the replicas chain from it, and the Sentinels are written but started only at
  promotion (a Sentinel fails over a master that reports itself a replica); the gateways,
  which find the master through the Sentinels, are waited for on /livez;
* a Redis Cluster target starts empty, as a fresh one (keys are copied by the transition).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import redis

from scaling.local.state import RunState
from scaling.render.endpoints import Endpoint

REDIS_DATA_ROLES = ("standalone", "master", "replica")


class LocalRun(Protocol):
    """What a Follow reads of a run (scaling.local.runner.LocalRun, which imports this)."""

    @property
    def summary(self) -> dict[str, Any]: ...

    state: RunState
    secrets: dict[str, str]


@dataclass(frozen=True)
class Follow:
    """A running source phase: where a replica of it connects, and its secrets."""

    stack: str
    state_dir: Path
    # The source's PostgreSQL read-write door: its primary, or its first HAProxy router's
    # read-write port (the router follows the source's leader).
    postgres: Endpoint
    # The source's Redis master (None: the source's Redis is a Redis Cluster, nothing to
    # replicate from a single node) and the source's Redis mode.
    redis_master: Endpoint | None
    redis_mode: str
    secrets: Mapping[str, str] = field(repr=False, default_factory=dict)

    @classmethod
    def of(cls, run: LocalRun) -> Follow:
        """The Follow of a complete local run (its summary, and who is Redis master now)."""
        summary = run.summary
        if not summary:
            raise ValueError(f"the local run in {run.state.state_dir} never finished starting")
        mode = str(summary["redis"]["mode"])
        return cls(
            stack=run.state.stack,
            state_dir=Path(run.state.state_dir),
            postgres=read_write_door(summary["postgres"]),
            redis_master=None if mode == "cluster" else redis_master(run),
            redis_mode=mode,
            secrets=dict(run.secrets),
        )

    def describe(self) -> dict[str, Any]:
        """For the target's summary: what it follows (no secret)."""
        return {
            "stack": self.stack,
            "state_dir": str(self.state_dir),
            "postgres": str(self.postgres),
            "redis_master": str(self.redis_master) if self.redis_master else None,
            "redis_mode": self.redis_mode,
        }


def read_write_door(postgres: Mapping[str, Any]) -> Endpoint:
    """The first host of the summary's read-write URL (``postgresql://u@h:p,h2:p/db``)."""
    netloc = urlsplit(str(postgres["primary"])).netloc.rpartition("@")[2]
    host, _, port = netloc.split(",")[0].rpartition(":")
    return Endpoint(host, int(port))


def data_nodes(run: LocalRun) -> list[Endpoint]:
    """The run's Redis data nodes (not Sentinels), in the order `up` started them."""
    return [
        Endpoint(p.host, p.port)
        for p in run.state.processes
        if p.tier == "redis" and p.role in REDIS_DATA_ROLES and p.port is not None
    ]


def node_role(endpoint: Endpoint, password: str) -> str | None:
    """What a Redis node says it is (``master``/``slave``), None when it does not answer."""
    client = redis.Redis(
        host=endpoint.host,
        port=endpoint.port,
        password=password,
        socket_timeout=2,
        socket_connect_timeout=2,
        decode_responses=True,
    )
    try:
        return str(client.info("replication").get("role"))
    except redis.RedisError:
        return None
    finally:
        client.close()


def redis_master(run: LocalRun) -> Endpoint:
    """The data node that reports itself master now (after a Sentinel failover, not
    necessarily the one the topology started as master)."""
    password = run.secrets["redis-password"]
    for endpoint in data_nodes(run):
        if node_role(endpoint, password) == "master":
            return endpoint
    raise LookupError(f"no Redis node of the run in {run.state.state_dir} reports role master")

"""The stack's exported endpoints and connection URIs: a view of the Topology.

Every host here is a node or service name of the Topology, addressed through
:mod:`scaling.topology.network`: a test resolves each one against the objects the stack
registers (Docker container names and aliases, Kubernetes Services and pods).
"""

from __future__ import annotations

from typing import Any

from scaling.render.endpoints import Endpoint
from scaling.render.pgbouncer import read_only_database
from scaling.topology import Node, Service, Topology
from scaling.topology.monitoring import monitoring_jobs
from scaling.topology.network import node_host, on_kubernetes, service_host
from scaling.topology.postgres import READ_WRITE, patroni_scope


def _service(topology: Topology, purpose: str, tier: str) -> Service | None:
    return next((s for s in topology.services if s.purpose == purpose and s.tier == tier), None)


def _address(topology: Topology, service: Service) -> str:
    return str(Endpoint(service_host(topology.spec, service.name), service.port))


def postgres_failover(topology: Topology) -> dict[str, Any]:
    """Who moves the primary role when a server fails, and where to ask who holds it.

    The stack knows the members, not the leader: Patroni elects it and may move it at any
    time after `pulumi up` (a failover, a switchover), so no deploy-time output could say
    which member leads. Ask a member's REST API instead: ``GET <api>/leader`` answers 200
    on the leader alone, ``GET <api>/cluster`` lists every member with its role and lag
    (``sikka-scaling local status`` shows it for the local runner). Clients need none of
    this: the ``postgres`` service follows the leader.

    manager: "patroni" (Docker, local runner: etcd holds its leader lock), "stackgres"
    (Kubernetes: the operator's Patroni, with the Kubernetes API as its lock), or "none"
    (one server, nothing to fail over to).
    """
    spec = topology.spec
    pg = spec.postgres
    if on_kubernetes(spec):
        return {
            "manager": "stackgres",
            "dcs": {"kind": "kubernetes", "endpoints": []},
            "members": [],
            "leader_path": "/leader",
            "cluster_path": "/cluster",
            "synchronous_mode": pg.synchronous_mode,
        }
    dcs = _service(topology, "dcs", "postgres")
    if dcs is None:
        return {"manager": "none", "synchronous_mode": pg.synchronous_mode}
    members = [n for n in topology.tier("postgres") if "patroni" in n.ports]

    def api(node: Node) -> str:
        return (
            f"http://{Endpoint(node_host(spec, node.group, node.ordinal), node.ports['patroni'])}"
        )

    return {
        "manager": "patroni",
        "scope": patroni_scope(spec),
        "dcs": {
            "kind": "etcd3",
            "endpoints": [
                str(Endpoint(node_host(spec, n.group, n.ordinal), dcs.port))
                for n in topology.nodes
                if n.name in dcs.targets
            ],
        },
        "members": [{"name": n.name, "api": api(n)} for n in members],
        "leader_path": "/leader",
        "cluster_path": "/cluster",
        "synchronous_mode": pg.synchronous_mode,
    }


def postgres_endpoints(topology: Topology) -> dict[str, Any]:
    primary = _service(topology, "read-write", "postgres")
    assert primary is not None  # every phase has one
    read_only = _service(topology, "read-only", "postgres")
    pooler = _service(topology, "pooler", "postgres")
    return {
        "failover": postgres_failover(topology),
        "primary_endpoint": _address(topology, primary),
        "replica_endpoints": [_address(topology, read_only)] if read_only else [],
        # On Kubernetes StackGres runs PgBouncer in front of the primary Service's port.
        "pooler_endpoint": _address(topology, pooler)
        if pooler
        else (_address(topology, primary) if topology.spec.pooler.enabled else None),
    }


def redis_endpoints(topology: Topology) -> dict[str, Any]:
    spec = topology.spec

    def hosts(role_nodes: list[Any]) -> list[str]:
        return [
            str(Endpoint(node_host(spec, n.group, n.ordinal), next(iter(n.ports.values()))))
            for n in role_nodes
        ]

    mode = spec.redis.mode
    if mode == "sentinel":
        return {
            "redis_mode": mode,
            "sentinel_endpoints": hosts(topology.with_role("sentinel")),
            "master_name": spec.redis.master_name,
        }
    if mode == "cluster":
        return {
            "redis_mode": mode,
            "node_endpoints": hosts(topology.with_role("cluster-master", "cluster-replica")),
        }
    service = _service(topology, "redis", "redis")
    assert service is not None
    return {"redis_mode": mode, "redis_endpoint": _address(topology, service)}


def gateway_endpoints(topology: Topology) -> dict[str, Any]:
    spec = topology.spec
    bounds = topology.bounds("gateway")
    service = _service(topology, "gateway", "gateway")
    assert service is not None
    return {
        "gateway_service": _address(topology, service),
        "min_replicas": bounds.min_replicas,
        "max_replicas": bounds.max_replicas,
        "gateway_endpoints": [
            str(Endpoint(node_host(spec, n.group, n.ordinal), n.ports["http"]))
            for n in topology.tier("gateway")
        ]
        if not on_kubernetes(spec)
        else [],
        # Each gateway's /metrics (worker i of a gateway answers on this port + i); scrapers
        # only. On Kubernetes the replicas come and go with the HPA: no stable names.
        "metrics_endpoints": [
            str(Endpoint(node_host(spec, n.group, n.ordinal), n.ports["metrics"]))
            for n in topology.tier("gateway")
        ]
        if not on_kubernetes(spec)
        else [],
    }


def nginx_endpoints(topology: Topology) -> dict[str, Any]:
    spec = topology.spec
    service = _service(topology, "http", "nginx")
    assert service is not None
    if on_kubernetes(spec):
        return {"url": f"http://{service_host(spec, service.name)}", "status_url": None}
    proxy = topology.tier("nginx")[0]
    return {
        # Nginx publishes this port on the Docker host; the status port stays private.
        "url": f"http://localhost:{spec.docker.http_port}",
        "status_url": f"http://{proxy.name}:{proxy.ports['status']}/nginx_status",
    }


def connection_uris(topology: Topology) -> dict[str, tuple[str, str, str]]:
    """Client connection URIs as (before password, secret name, after password): the caller
    puts the secret in between, so the URI exists only as a secret."""
    spec = topology.spec
    pg = spec.postgres
    eps = postgres_endpoints(topology)

    def database(address: str, name: str) -> tuple[str, str, str]:
        return f"postgresql://{pg.user}:", "postgres-password", f"@{address}/{name}"

    def redis_uri(scheme: str, rest: str) -> tuple[str, str, str]:
        return f"{scheme}://:", "redis-password", f"@{rest}/0"

    uris = {
        "database_uri": database(eps["pooler_endpoint"] or eps["primary_endpoint"], pg.database)
    }
    pooler = _service(topology, "pooler", "postgres")
    if eps["replica_endpoints"]:
        # A pooler node spans the replicas with its read-only database; otherwise the
        # read-only Service is the entry point.
        uris["database_read_uri"] = (
            database(eps["pooler_endpoint"], read_only_database(spec))
            if pooler
            else database(eps["replica_endpoints"][0], pg.database)
        )
    redis = redis_endpoints(topology)
    if redis["redis_mode"] == "sentinel":
        sentinels = ",".join(redis["sentinel_endpoints"])
        uris["redis_uri"] = redis_uri("redis+sentinel", f"{sentinels}/{redis['master_name']}")
    elif redis["redis_mode"] == "cluster":
        uris["redis_uri"] = redis_uri("redis", redis["node_endpoints"][0])
    else:
        uris["redis_uri"] = redis_uri("redis", redis["redis_endpoint"])
    return uris


def monitoring_endpoints(topology: Topology) -> dict[str, Any]:
    """Where the phase's Prometheus answers (on the private network) and the scrape jobs it
    runs. On Kubernetes the cluster's Prometheus Operator runs it: no address of ours."""
    spec = topology.spec
    jobs = [job.name for job in monitoring_jobs(topology) if job.targets]
    servers = topology.with_role("prometheus")
    if on_kubernetes(spec) or not servers:
        return {"prometheus_url": None, "scrape_jobs": jobs}
    server = servers[0]
    return {"prometheus_url": f"http://{server.name}:{server.ports['http']}", "scrape_jobs": jobs}


# StackGres answers on this port directly (5432 is PgBouncer's when the cluster pools):
# a standby replicates from it.
STACKGRES_DIRECT_PORT = 5433


def transition_source(topology: Topology) -> dict[str, Any]:
    """What a transition's target (``sikka:promoteFrom`` naming this stack) reads from this
    stack through a StackReference (scaling.promotion's tokens): where its PostgreSQL's
    read-write door takes a standby's replication connection, its Redis master, and on
    Docker the network the target's members join to reach them (the transition network of
    ``sikka:promoteTo``; None until it is set)."""
    spec = topology.spec
    redis_host: str | None = None
    if on_kubernetes(spec):
        postgres = {
            "host": service_host(spec, READ_WRITE),
            "port": STACKGRES_DIRECT_PORT,
            "sharded": spec.postgres.mode == "citus",
            "shards": spec.postgres.shards if spec.postgres.mode == "citus" else 0,
            # The application's database: a Citus target subscribes to it (logical).
            "database": spec.postgres.database,
        }
        platform: dict[str, Any] = {"namespace": spec.namespace}
    else:
        primary = _service(topology, "read-write", "postgres")
        assert primary is not None  # every phase has one
        door = topology.node(primary.targets[0])
        postgres = {
            # The container's name: unique on the Docker host, unlike the node's aliases.
            "host": f"{spec.name_prefix}-{door.name}",
            "port": primary.port,
            "sharded": False,
            "shards": 0,
            "database": spec.postgres.database,
        }
        platform = {
            "network": spec.docker_transition_network if spec.promote_to else None,
        }
    masters = topology.with_role("standalone", "master")
    if masters:
        node = masters[0]
        redis_host = (
            node_host(spec, node.group, node.ordinal)
            if on_kubernetes(spec)
            else f"{spec.name_prefix}-{node.name}"
        )
    return {
        "stack": spec.stack,
        "phase": spec.phase.value,
        "platform": spec.platform.value,
        "postgres": postgres,
        "redis": {
            "mode": spec.redis.mode,
            "host": redis_host,
            "port": next(iter(masters[0].ports.values())) if masters else None,
        },
        spec.platform.value: platform,
    }

"""PostgreSQL nodes: primary + streaming replicas (+ PgBouncer) on Docker and locally; on
Kubernetes the StackGres instances (SGCluster, or the Citus coordinator and shard groups of
an SGShardedCluster), whose Services the operator creates under these names."""

from __future__ import annotations

from scaling.model import POOLER_ADMIN_USER, SUPERUSER, PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.env import SECRET_VARIABLES
from scaling.render.pgbouncer import (
    POOLER_PORT,
    PoolerLayout,
    render_pgbouncer_hba,
    render_pgbouncer_ini,
    userlist_sh,
)
from scaling.render.postgres import (
    PG_PORT,
    PostgresLayout,
    render_pg_hba_conf,
    render_postgresql_conf,
    replication_slot,
)
from scaling.render.postgres_start import (
    init_roles_script,
    primary_start_script,
    replica_start_script,
)

from .model import ConfigFile, Edge, HealthCheck, Node, Service, Stop, Volume
from .network import node_host, node_name, on_kubernetes

GROUP = "postgres"
PRIMARY = node_name(GROUP, 0)
POOLER = "pgbouncer"
# Service names; on Kubernetes StackGres creates them for the SGCluster / SGShardedCluster.
READ_WRITE = "postgres"
REPLICAS = "postgres-replicas"  # SGCluster: every replica
CITUS_READS = "postgres-reads"  # SGShardedCluster: any coordinator instance
COORDINATOR_GROUP = "postgres-coord"


def shard_group(shard: int) -> str:
    """StackGres names the SGCluster of Citus worker group ``shard`` this way."""
    return f"postgres-shard{shard}"


CONF_DIR = "/etc/postgresql"
DATA_DIR = "/var/lib/postgresql/data"
PASSFILE_DIR = "/run/sikka"
# Fast shutdown (SIGINT) ends sessions and writes a checkpoint; given time, nothing replays.
STOP = Stop("SIGINT", 120)


def _secret(name: str) -> dict[str, str]:
    return {SECRET_VARIABLES[name]: name}


def replica_count(spec: PhaseSpec) -> int:
    return spec.postgres.read_replicas if spec.postgres.mode == "replicated" else 0


def kept_slots(spec: PhaseSpec) -> list[str]:
    return [replication_slot(i) for i in range(1, replica_count(spec) + 1)]


def _ready() -> HealthCheck:
    return HealthCheck(f"pg_isready -q -h 127.0.0.1 -p {PG_PORT}")


def _volume(name: str, spec: PhaseSpec, size_gb: int | None = None) -> Volume:
    return Volume(f"{name}-data", DATA_DIR, size_gb or spec.postgres.storage_gb)


def _container_nodes(spec: PhaseSpec) -> tuple[list[Node], list[Service], list[Edge]]:
    pg = spec.postgres
    replicas = replica_count(spec)
    layout = PostgresLayout(
        port=PG_PORT,
        hba_file=f"{CONF_DIR}/pg_hba.conf",
        private_networks=(str(spec.docker_subnet),),
    )
    conf = ConfigFile(
        f"{CONF_DIR}/postgresql.conf", render_postgresql_conf(spec, layout), "postgresql.conf"
    )
    hba = ConfigFile(f"{CONF_DIR}/pg_hba.conf", render_pg_hba_conf(spec, layout), "pg_hba.conf")
    replication, slots = bool(replicas), kept_slots(spec)
    start = ConfigFile(
        f"{CONF_DIR}/primary-start.sh",
        primary_start_script(
            conf.path, pg.user, pg.database, replication=replication, keep_slots=slots
        ),
        "primary-start.sh",
    )
    # The image runs it once, on an empty volume; primary-start.sh applies the same SQL later.
    init = ConfigFile(
        "/docker-entrypoint-initdb.d/10-roles.sh",
        init_roles_script(pg.user, pg.database, replication=replication, keep_slots=slots),
        "10-roles.sh",
    )
    files = [conf, hba, start, init]
    secrets = _secret("postgres-superuser-password") | _secret("postgres-password")
    if replicas:
        secrets |= _secret("replication-password")
    primary = Node(
        name=PRIMARY,
        tier="postgres",
        role="primary",
        group=GROUP,
        ordinal=0,
        image=pg.image,
        ports={"postgres": PG_PORT},
        entrypoint=("sh", start.path),
        # The official image makes POSTGRES_USER its superuser, with POSTGRES_PASSWORD: that
        # is `postgres`; the application role is created by the scripts above.
        env={"POSTGRES_USER": SUPERUSER, "POSTGRES_DB": pg.database, "PGDATA": DATA_DIR},
        secret_env=secrets,
        files=tuple(files),
        volumes=(_volume(PRIMARY, spec),),
        health=_ready(),
        stop=STOP,
        memory_mb=pg.memory_mb,
    )
    nodes = [primary]
    edges: list[Edge] = []
    replica_start = ConfigFile(
        f"{CONF_DIR}/replica-start.sh",
        replica_start_script(conf.path, f"{PASSFILE_DIR}/pgpass"),
        "replica-start.sh",
    )
    for index in range(1, replicas + 1):
        name = node_name(GROUP, index)
        nodes.append(
            Node(
                name=name,
                tier="postgres",
                role="replica",
                group=GROUP,
                ordinal=index,
                image=pg.image,
                ports={"postgres": PG_PORT},
                replica_of=PRIMARY,
                entrypoint=("sh", replica_start.path),
                user="postgres",
                env={
                    "PGDATA": DATA_DIR,
                    "NODE_NAME": name,
                    "PRIMARY_HOST": node_host(spec, GROUP, 0),
                    "PRIMARY_PORT": str(PG_PORT),
                    "REPLICATION_SLOT": replication_slot(index),
                },
                secret_env=_secret("replication-password"),
                files=(conf, hba, replica_start),
                volumes=(_volume(name, spec),),
                tmpfs=(PASSFILE_DIR,),
                health=_ready(),
                stop=STOP,
                memory_mb=pg.memory_mb,
            )
        )
        edges.append(Edge(name, PRIMARY, "replicates-from"))
    services = [Service(READ_WRITE, "postgres", PG_PORT, (PRIMARY,), "read-write")]
    if replicas:
        targets = tuple(n.name for n in nodes[1:])
        services.append(Service(REPLICAS, "postgres", PG_PORT, targets, "read-only"))
    if spec.pooler.enabled:
        pooler = pooler_node(spec, read_pool=bool(replicas))
        nodes.append(pooler)
        services.append(Service(POOLER, "postgres", POOLER_PORT, (POOLER,), "pooler"))
        edges.append(Edge(POOLER, READ_WRITE, "pools"))
        if replicas:
            edges.append(Edge(POOLER, REPLICAS, "pools"))
    return nodes, services, edges


def pooler_node(spec: PhaseSpec, *, read_pool: bool) -> Node:
    layout = PoolerLayout(
        listen=Endpoint("0.0.0.0", POOLER_PORT),
        primary=Endpoint(READ_WRITE, PG_PORT),
        replica_hosts=(REPLICAS,) if read_pool else (),
        replica_port=PG_PORT,
        auth_file="/run/pgbouncer/userlist.txt",
        hba_file="/etc/pgbouncer/pgbouncer_hba.conf",
        client_networks=(str(spec.docker_subnet),),
    )
    # The auth file is written from the secrets at start-up, into a tmpfs, never an image:
    # the application role's line and the console user's, each from its own secret.
    app = SECRET_VARIABLES["postgres-password"]
    admin = SECRET_VARIABLES["pgbouncer-admin-password"]
    start = (
        "set -eu\numask 077\n"
        f"{{\n{userlist_sh(spec.postgres.user, app)}\n{userlist_sh(POOLER_ADMIN_USER, admin)}\n"
        "} > /run/pgbouncer/userlist.txt\n"
        "exec pgbouncer /etc/pgbouncer/pgbouncer.ini\n"
    )
    return Node(
        name=POOLER,
        tier="postgres",
        role="pooler",
        group=POOLER,
        ordinal=0,
        image=spec.pooler.image,
        ports={"pgbouncer": POOLER_PORT},
        entrypoint=("sh", "-c", start),
        secret_env=_secret("postgres-password") | _secret("pgbouncer-admin-password"),
        files=(
            ConfigFile(
                "/etc/pgbouncer/pgbouncer.ini", render_pgbouncer_ini(spec, layout), "pgbouncer.ini"
            ),
            ConfigFile(layout.hba_file, render_pgbouncer_hba(spec, layout), "pgbouncer_hba.conf"),
        ),
        tmpfs=("/run/pgbouncer",),
        health=HealthCheck(f"nc -z 127.0.0.1 {POOLER_PORT}"),
        # SIGINT: "safe shutdown", PgBouncer waits for every transaction in flight.
        stop=Stop("SIGINT", 30),
    )


def _stackgres_node(
    spec: PhaseSpec, group: str, ordinal: int, role: str, size_gb: int, primary: str | None
) -> Node:
    return Node(
        name=node_name(group, ordinal),
        tier="postgres",
        role=role,  # type: ignore[arg-type]
        group=group,
        ordinal=ordinal,
        image=spec.postgres.image,
        ports={"postgres": PG_PORT},
        replica_of=primary,
        volumes=(_volume(node_name(group, ordinal), spec, size_gb),),
        memory_mb=spec.postgres.memory_mb,
    )


def shard_storage_gb(spec: PhaseSpec) -> int:
    """Each worker group holds its share of the phase's data; the coordinator (metadata and
    reference tables) gets a share's worth too."""
    return max(1, -(-spec.postgres.storage_gb // spec.postgres.shards))


def _stackgres_nodes(spec: PhaseSpec) -> tuple[list[Node], list[Service], list[Edge]]:
    """Instances as StackGres names its pods. Patroni elects the primary; ordinal 0 is the
    first one bootstrapped and the others replicate from whichever is elected."""
    pg = spec.postgres
    nodes: list[Node] = []
    edges: list[Edge] = []
    if pg.mode != "citus":
        replicas = pg.read_replicas
        for i in range(1 + replicas):
            nodes.append(
                _stackgres_node(
                    spec,
                    GROUP,
                    i,
                    "replica" if i else "primary",
                    pg.storage_gb,
                    PRIMARY if i else None,
                )
            )
        services = [Service(READ_WRITE, "postgres", PG_PORT, (), "read-write")]
        if replicas:
            services.append(Service(REPLICAS, "postgres", PG_PORT, (), "read-only"))
    else:
        size = shard_storage_gb(spec)
        groups = [(COORDINATOR_GROUP, pg.coordinator_instances, "coordinator")]
        groups += [(shard_group(s), pg.instances_per_shard, "shard") for s in range(pg.shards)]
        for group, count, role in groups:
            for i in range(count):
                first = node_name(group, 0)
                nodes.append(_stackgres_node(spec, group, i, role, size, first if i else None))
        services = [
            Service(READ_WRITE, "postgres", PG_PORT, (), "read-write"),
            Service(CITUS_READS, "postgres", PG_PORT, (), "read-only"),
        ]
    edges = [Edge(n.name, n.replica_of, "replicates-from") for n in nodes if n.replica_of]
    return nodes, services, edges


def postgres_tier(spec: PhaseSpec) -> tuple[list[Node], list[Service], list[Edge]]:
    if on_kubernetes(spec):
        return _stackgres_nodes(spec)
    return _container_nodes(spec)

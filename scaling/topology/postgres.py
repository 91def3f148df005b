"""PostgreSQL nodes: primary + streaming replicas (+ PgBouncer) on Docker and locally; on
Kubernetes the StackGres instances (SGCluster, or the Citus coordinator and shard groups of
an SGShardedCluster), whose Services the operator creates under these names."""

from __future__ import annotations

from scaling.model import MONITORING_USER, POOLER_ADMIN_USER, SUPERUSER, PhaseSpec
from scaling.promotion import token
from scaling.render.cutover import postgres_cutover_script
from scaling.render.endpoints import Endpoint
from scaling.render.env import SECRET_VARIABLES
from scaling.render.etcd import CLIENT_PORT, PEER_PORT, EtcdMember, etcd_arguments
from scaling.render.haproxy import (
    READ_ONLY_PORT,
    READ_WRITE_PORT,
    Member,
    RouterLayout,
    render_haproxy_cfg,
)
from scaling.render.haproxy import (
    STATS_PORT as ROUTER_STATS_PORT,
)
from scaling.render.patroni import (
    PATRONI_SECRET_VARIABLES,
    REST_API_USER,
    REST_PORT,
    RESTAPI_PASSWORD_ENV,
    ROLES_SECRET_VARIABLES,
    PatroniLayout,
    StandbySource,
    render_patroni_yml,
    roles_script,
)
from scaling.render.pgbouncer import (
    POOLER_PORT,
    PoolerLayout,
    config_name,
    render_pgbouncer_hba,
    render_pgbouncer_ini,
    supervise_sh,
    userlist_sh,
)
from scaling.render.postgres import (
    PG_PORT,
    PostgresLayout,
    render_pg_hba_conf,
    render_postgresql_conf,
)
from scaling.render.postgres_start import init_roles_script, primary_start_script

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
# Under Patroni (Docker, local runner): the DCS and the routers in front of the members.
ETCD_GROUP = "etcd"
ETCD_SERVICE = "etcd"
ROUTER_GROUP = "haproxy"


def shard_group(shard: int) -> str:
    """StackGres names the SGCluster of Citus worker group ``shard`` this way."""
    return f"postgres-shard{shard}"


CONF_DIR = "/etc/postgresql"
DATA_DIR = "/var/lib/postgresql/data"
PASSFILE_DIR = "/run/sikka"
PATRONI_DIR = "/etc/patroni"
SOCKET_DIR = "/var/run/postgresql"
ETCD_DATA_DIR = "/var/lib/etcd"
ETCD_STORAGE_GB = 1
ROUTER_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"
# Docker's embedded DNS server, in every container on a user-defined network.
DOCKER_DNS = Endpoint("127.0.0.11", 53)
# Fast shutdown (SIGINT) ends sessions and writes a checkpoint; given time, nothing replays.
STOP = Stop("SIGINT", 120)


def _secret(name: str) -> dict[str, str]:
    return {SECRET_VARIABLES[name]: name}


def replica_count(spec: PhaseSpec) -> int:
    return spec.postgres.read_replicas if spec.postgres.mode == "replicated" else 0


def _ready() -> HealthCheck:
    return HealthCheck(f"pg_isready -q -h 127.0.0.1 -p {PG_PORT}")


def _volume(name: str, spec: PhaseSpec, size_gb: int | None = None) -> Volume:
    return Volume(f"{name}-data", DATA_DIR, size_gb or spec.postgres.storage_gb)


def _container_nodes(spec: PhaseSpec) -> tuple[list[Node], list[Service], list[Edge]]:
    if replica_count(spec):
        return _patroni_nodes(spec)
    return _single_node(spec)


def _single_node(spec: PhaseSpec) -> tuple[list[Node], list[Service], list[Edge]]:
    """One PostgreSQL without replicas (launch): the official image, its start scripts."""
    pg = spec.postgres
    # A transition's source (sikka:promoteTo) keeps a replication login for its target.
    replication = spec.promote_to is not None
    layout = PostgresLayout(
        port=PG_PORT,
        hba_file=f"{CONF_DIR}/pg_hba.conf",
        private_networks=_private_networks(spec),
        monitoring_user=MONITORING_USER,
        # A transition's source: its target's cut-over logs in to stop its writes.
        superuser_networks=(str(spec.docker_transition_subnet),) if replication else (),
    )
    conf = ConfigFile(
        f"{CONF_DIR}/postgresql.conf", render_postgresql_conf(spec, layout), "postgresql.conf"
    )
    hba = ConfigFile(f"{CONF_DIR}/pg_hba.conf", render_pg_hba_conf(spec, layout), "pg_hba.conf")
    start = ConfigFile(
        f"{CONF_DIR}/primary-start.sh",
        primary_start_script(
            conf.path,
            pg.user,
            pg.database,
            replication=replication,
            keep_slots=[],
            monitoring=True,
        ),
        "primary-start.sh",
    )
    # The image runs it once, on an empty volume; primary-start.sh applies the same SQL later.
    init = ConfigFile(
        "/docker-entrypoint-initdb.d/10-roles.sh",
        init_roles_script(
            pg.user, pg.database, replication=replication, keep_slots=[], monitoring=True
        ),
        "10-roles.sh",
    )
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
        secret_env=_secret("postgres-superuser-password")
        | _secret("postgres-password-scram")
        | _secret("monitoring-password-scram")
        | (_secret("replication-password") if replication else {}),
        files=(conf, hba, start, init),
        volumes=(_volume(PRIMARY, spec),),
        health=_ready(),
        stop=STOP,
        memory_mb=pg.memory_mb,
        extra_networks=_transition_networks(spec),
    )
    nodes, edges = [primary], []
    services = [Service(READ_WRITE, "postgres", PG_PORT, (PRIMARY,), "read-write")]
    if spec.pooler.enabled:
        layout_pool = _pool_targets(spec, Endpoint(READ_WRITE, PG_PORT), None)
        pooler, pooler_edges = _poolers(spec, layout_pool)
        nodes += pooler
        edges += pooler_edges
        services.append(Service(POOLER, "postgres", POOLER_PORT, _names(pooler), "pooler"))
    return nodes, services, edges


def _private_networks(spec: PhaseSpec) -> tuple[str, ...]:
    """Where the server admits connections from: the phase's network and, on a transition's
    source (sikka:promoteTo), the network its target's members join."""
    if spec.promote_to is None:
        return (str(spec.docker_subnet),)
    return (str(spec.docker_subnet), str(spec.docker_transition_subnet))


def _transition_networks(spec: PhaseSpec) -> tuple[str, ...]:
    """A transition's source (sikka:promoteTo): its read-write door also joins the network
    its target's members join (scaling.promotion)."""
    return (spec.docker_transition_network,) if spec.promote_to is not None else ()


# A transition's target (sikka:promoteFrom): its members follow the source's read-write door,
# at the host the source stack exports (scaling.exports.transition_source), on the port every
# Docker phase's door answers on (a plain primary's, or the routers' read-write port; the
# Pulumi layer checks the source's output against it).
SOURCE_HOST = token("postgres", "host")
SOURCE_DOOR_PORT = PG_PORT
assert READ_WRITE_PORT == PG_PORT, "a Patroni phase's door answers on the plain primary's port"
SOURCE_NETWORK = token("docker", "network")
PROMOTER = "postgres-promote"


def _standby(spec: PhaseSpec) -> StandbySource | None:
    """While sikka:promoteFrom is set the cluster is created as a standby of the source. It
    stays in patroni.yml after the cut-over (Patroni reads bootstrap.dcs only when it creates
    the cluster), so promoting changes no member: the promoter does it through the DCS."""
    if spec.promotion is None:
        return None
    return StandbySource(SOURCE_HOST, SOURCE_DOOR_PORT)


def _patroni_yml(spec: PhaseSpec, layout: PatroniLayout) -> str:
    return render_patroni_yml(spec, layout, standby=_standby(spec))


def promoter_node(spec: PhaseSpec, members: list[Node]) -> Node:
    """One-shot, at the cut-over (sikka:promoteCutover): stops writes on the source, waits
    until the standby leader has replayed the source's last WAL position, then removes
    ``standby_cluster`` through a member's REST API (Patroni promotes its standby leader);
    when the target cannot catch up it gives the source its writes back and fails
    (scaling.render.cutover). It joins the source's transition network, where the source's
    read-write door admits its superuser login. Safe to run again."""
    apis = [f"{node_host(spec, GROUP, m.ordinal)}:{REST_PORT}" for m in members]
    password = SECRET_VARIABLES["postgres-superuser-password"]
    script = postgres_cutover_script(
        (SOURCE_HOST, SOURCE_DOOR_PORT),
        apis,
        superuser=SUPERUSER,
        superuser_password_env=password,
        rest_user=REST_API_USER,
        rest_password_env=RESTAPI_PASSWORD_ENV,
    )
    return Node(
        name=PROMOTER,
        tier="postgres",
        role="promoter",
        group=PROMOTER,
        ordinal=0,
        image=spec.postgres.patroni_image,
        ports={},
        entrypoint=("sh", "-c", script),
        user="postgres",
        # The source's superuser password: the target inherits it (scaling.promotion).
        secret_env={
            RESTAPI_PASSWORD_ENV: "patroni-api-password",
            password: "postgres-superuser-password",
        },
        one_shot=True,
        extra_networks=(SOURCE_NETWORK,),
    )


def _names(nodes: list[Node]) -> tuple[str, ...]:
    return tuple(n.name for n in nodes)


def _etcd_nodes(spec: PhaseSpec) -> tuple[list[Node], tuple[EtcdMember, ...]]:
    members = tuple(
        EtcdMember(
            node_name(ETCD_GROUP, i),
            Endpoint(node_host(spec, ETCD_GROUP, i), CLIENT_PORT),
            Endpoint(node_host(spec, ETCD_GROUP, i), PEER_PORT),
        )
        for i in range(spec.postgres.etcd_members)
    )
    nodes = [
        Node(
            name=member.name,
            tier="postgres",
            role="dcs",
            group=ETCD_GROUP,
            ordinal=i,
            image=spec.postgres.etcd_image,
            ports={"etcd": CLIENT_PORT, "etcd-peer": PEER_PORT},
            entrypoint=(
                "etcd",
                *etcd_arguments(spec, member, members, ETCD_DATA_DIR, listen_host="0.0.0.0"),
            ),
            volumes=(Volume(f"{member.name}-data", ETCD_DATA_DIR, ETCD_STORAGE_GB),),
            # Healthy once the member serves with a majority of the cluster. The etcd image
            # has no shell: the check runs etcdctl directly.
            health=HealthCheck(
                f"etcdctl --endpoints=http://127.0.0.1:{CLIENT_PORT} endpoint health",
                start_period_seconds=10,
                shell=False,
            ),
            stop=Stop("SIGTERM", 30),
        )
        for i, member in enumerate(members)
    ]
    return nodes, members


def patroni_scope(spec: PhaseSpec) -> str:
    """The cluster's name in the DCS: one per stack."""
    return spec.name_prefix


def _patroni_nodes(spec: PhaseSpec) -> tuple[list[Node], list[Service], list[Edge]]:
    """Patroni members (ordinal 0 bootstraps the cluster, the others clone from whichever
    member leads), an etcd cluster for their leader lock, HAProxy routers that follow the
    leader through Patroni's REST API, and PgBouncers behind the `pgbouncer` service."""
    pg = spec.postgres
    etcd, members = _etcd_nodes(spec)
    roles = ConfigFile(
        f"{PATRONI_DIR}/roles.sh",
        roles_script(spec, SOCKET_DIR, PG_PORT, f"http://127.0.0.1:{REST_PORT}", monitoring=True),
        "patroni-roles.sh",
    )
    # The leader's role script also sets the monitoring role's verifier.
    secrets = (
        dict(PATRONI_SECRET_VARIABLES)
        | ROLES_SECRET_VARIABLES
        | _secret("monitoring-password-scram")
    )
    nodes: list[Node] = [*etcd]
    edges: list[Edge] = []
    for index in range(1 + replica_count(spec)):
        name = node_name(GROUP, index)
        host = node_host(spec, GROUP, index)
        layout = PatroniLayout(
            scope=patroni_scope(spec),
            name=name,
            rest_listen=Endpoint("0.0.0.0", REST_PORT),
            rest_connect=Endpoint(host, REST_PORT),
            pg_listen=Endpoint("0.0.0.0", PG_PORT),
            pg_connect=Endpoint(host, PG_PORT),
            data_dir=DATA_DIR,
            socket_dir=SOCKET_DIR,
            pgpass=f"{PASSFILE_DIR}/pgpass",
            etcd_hosts=tuple(m.client for m in members),
            private_networks=(str(spec.docker_subnet),),
            roles_script=f"sh {roles.path}",
            monitoring_user=MONITORING_USER,
            # A transition's source (sikka:promoteTo): its target's cut-over guard logs in
            # through the routers (HAProxy, on the private network) to stop its writes.
            superuser_networks=(str(spec.docker_subnet),) if spec.promote_to else (),
        )
        config = ConfigFile(
            f"{PATRONI_DIR}/patroni.yml", _patroni_yml(spec, layout), f"patroni-{name}.yml"
        )
        nodes.append(
            Node(
                name=name,
                tier="postgres",
                # The member that bootstraps the cluster; Patroni elects the leader after.
                role="replica" if index else "primary",
                group=GROUP,
                ordinal=index,
                image=pg.patroni_image,
                ports={"postgres": PG_PORT, "patroni": REST_PORT},
                replica_of=PRIMARY if index else None,
                # PostgreSQL refuses a data folder others may read; the volume's root is that
                # folder, and pg_basebackup keeps the mode it finds (the image's 1777).
                entrypoint=("sh", "-c", f"chmod 0700 {DATA_DIR} && exec patroni {config.path}"),
                user="postgres",
                env={"PATRONI_RESTAPI_USERNAME": REST_API_USER},
                secret_env=secrets,
                files=(config, roles),
                volumes=(_volume(name, spec),),
                tmpfs=(PASSFILE_DIR,),
                health=HealthCheck(
                    f"curl -fsS -o /dev/null http://127.0.0.1:{REST_PORT}/health",
                    start_period_seconds=60,
                ),
                # Patroni stops PostgreSQL (fast shutdown) and hands the lock over first.
                stop=Stop("SIGTERM", 120),
                memory_mb=pg.memory_mb,
                # A transition's target: every member may lead the standby cluster, so each
                # reaches the source's read-write door.
                extra_networks=(SOURCE_NETWORK,) if spec.promotion is not None else (),
            )
        )
        edges.append(Edge(name, ETCD_SERVICE, "connects-to"))
        if index:
            edges.append(Edge(name, PRIMARY, "replicates-from"))
    patroni = [n for n in nodes if n.group == GROUP]
    routers = _routers(spec, patroni)
    nodes += routers
    if spec.promotion is not None and spec.promotion.cutover:
        nodes.append(promoter_node(spec, patroni))
        edges += [Edge(PROMOTER, member.name, "connects-to") for member in patroni]
    for router in routers:
        edges += [Edge(router.name, member.name, "proxies-to") for member in patroni]
    services = [
        Service(ETCD_SERVICE, "postgres", CLIENT_PORT, _names(etcd), "dcs"),
        Service(READ_WRITE, "postgres", READ_WRITE_PORT, _names(routers), "read-write"),
        Service(REPLICAS, "postgres", READ_ONLY_PORT, _names(routers), "read-only"),
    ]
    targets = _pool_targets(
        spec, Endpoint(READ_WRITE, READ_WRITE_PORT), Endpoint(REPLICAS, READ_ONLY_PORT)
    )
    poolers, pooler_edges = _poolers(spec, targets)
    nodes += poolers
    edges += pooler_edges
    services.append(Service(POOLER, "postgres", POOLER_PORT, _names(poolers), "pooler"))
    return nodes, services, edges


def _routers(spec: PhaseSpec, members: list[Node]) -> list[Node]:
    layout = RouterLayout(
        read_write=Endpoint("0.0.0.0", READ_WRITE_PORT),
        read_only=Endpoint("0.0.0.0", READ_ONLY_PORT),
        stats=Endpoint("0.0.0.0", ROUTER_STATS_PORT),
        members=tuple(
            Member(m.name, Endpoint(node_host(spec, GROUP, m.ordinal), PG_PORT), REST_PORT)
            for m in members
        ),
        resolver=DOCKER_DNS,
    )
    config = ConfigFile(ROUTER_CONFIG, render_haproxy_cfg(spec, layout), "haproxy.cfg")
    return [
        Node(
            name=node_name(ROUTER_GROUP, i),
            tier="postgres",
            role="router",
            group=ROUTER_GROUP,
            ordinal=i,
            image=spec.pooler.router_image,
            ports={
                "postgres": READ_WRITE_PORT,
                "postgres-ro": READ_ONLY_PORT,
                "stats": ROUTER_STATS_PORT,
            },
            command=("haproxy", "-W", "-db", "-f", ROUTER_CONFIG),
            files=(config,),
            health=HealthCheck(f"bash -c '</dev/tcp/127.0.0.1/{ROUTER_STATS_PORT}'"),
            # SIGUSR1: HAProxy's soft stop, sessions finish on their own.
            stop=Stop("SIGUSR1", 30),
            extra_networks=_transition_networks(spec),
        )
        for i in range(spec.pooler.replicas)
    ]


def _pool_targets(spec: PhaseSpec, primary: Endpoint, replicas: Endpoint | None) -> PoolerLayout:
    return PoolerLayout(
        listen=Endpoint("0.0.0.0", POOLER_PORT),
        primary=primary,
        replica_hosts=(replicas.host,) if replicas else (),
        replica_port=replicas.port if replicas else primary.port,
        auth_file="/run/pgbouncer/userlist.txt",
        hba_file="/etc/pgbouncer/pgbouncer_hba.conf",
        client_networks=(str(spec.docker_subnet),),
        monitoring_user=MONITORING_USER,
    )


def _poolers(spec: PhaseSpec, layout: PoolerLayout) -> tuple[list[Node], list[Edge]]:
    """PgBouncers behind the `pgbouncer` service; each pools the read-write service and, with
    replicas, the read-only one."""
    many = spec.pooler.replicas > 1 or bool(layout.replica_hosts)
    nodes = [
        pooler_node(spec, layout, node_name(POOLER, i) if many else POOLER, i)
        for i in range(spec.pooler.replicas)
    ]
    edges = []
    for node in nodes:
        edges.append(Edge(node.name, READ_WRITE, "pools"))
        if layout.replica_hosts:
            edges.append(Edge(node.name, REPLICAS, "pools"))
    return nodes, edges


def pooler_node(spec: PhaseSpec, layout: PoolerLayout, name: str, ordinal: int) -> Node:
    # The auth file is written from the secrets at start-up, into a tmpfs, never an image:
    # the application role's line, the console user's and the monitoring role's, each its
    # password's SCRAM verifier (the pooler never sees a password).
    app = SECRET_VARIABLES["postgres-password-scram"]
    admin = SECRET_VARIABLES["pgbouncer-admin-password-scram"]
    monitor = SECRET_VARIABLES["monitoring-password-scram"]
    # pooler.processes PgBouncers in the one container, sharing its port (so_reuseport).
    configs = [
        (config_name(spec, k), render_pgbouncer_ini(spec, layout, k))
        for k in range(spec.pooler.processes)
    ]
    start = (
        "set -eu\numask 077\n"
        f"{{\n{userlist_sh(spec.postgres.user, app)}\n{userlist_sh(POOLER_ADMIN_USER, admin)}\n"
        + (f"{userlist_sh(layout.monitoring_user, monitor)}\n" if layout.monitoring_user else "")
        + "} > /run/pgbouncer/userlist.txt\n"
        + supervise_sh([f"/etc/pgbouncer/{name}" for name, _ in configs])
    )
    return Node(
        name=name,
        tier="postgres",
        role="pooler",
        group=POOLER,
        ordinal=ordinal,
        image=spec.pooler.image,
        ports={"pgbouncer": POOLER_PORT},
        entrypoint=("sh", "-c", start),
        secret_env=_secret("postgres-password-scram")
        | _secret("pgbouncer-admin-password-scram")
        | (_secret("monitoring-password-scram") if layout.monitoring_user else {}),
        files=(
            *(ConfigFile(f"/etc/pgbouncer/{name}", text, name) for name, text in configs),
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

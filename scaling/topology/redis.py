"""Redis nodes: standalone, master + replicas + Sentinels, or a Redis Cluster.

Cluster layout is fixed by ordinal, so that adding masters only appends nodes: node i
belongs to shard ``i // (1 + replicasPerMaster)``; the first node of a shard is its master,
the others replicate it. (Raising ``masters`` from 3 to 4 adds redis-6 and redis-7 as a new
shard; no existing node changes role.)
"""

from __future__ import annotations

from scaling.model import PhaseSpec
from scaling.promotion import following, token
from scaling.render.cutover import redis_cutover_script
from scaling.render.endpoints import Endpoint
from scaling.render.env import SECRET_VARIABLES
from scaling.render.redis import (
    REDIS_PORT,
    SENTINEL_PORT,
    RedisLayout,
    SentinelLayout,
    render_redis_conf,
    render_sentinel_conf,
)
from scaling.render.redis_import import redis_import_script
from scaling.render.redis_start import (
    MASTER_TOKEN,
    cluster_script,
    data_start_script,
    sentinel_start_script,
)

from .model import ConfigFile, Edge, HealthCheck, Node, Service, Stop, Volume
from .network import node_host, node_name, on_kubernetes

GROUP = "redis"
SENTINEL_GROUP = "redis-sentinel"
CLUSTER_INIT = "redis-cluster-init"
# One-shot at a Docker transition's cut-over: promotes the target's master once it holds
# every write the source's master acknowledged (scaling.render.cutover).
PROMOTER = "redis-promote"
# One-shot at a transition's cut-over onto a Redis Cluster (Docker and Kubernetes): copies
# the source master's keys into it while the source's writes are paused
# (scaling.render.redis_import).
IMPORTER = "redis-import"
# The PostgreSQL cut-over runs first (scaling.topology.postgres.PROMOTER).
POSTGRES_PROMOTER = "postgres-promote"
STANDALONE_SERVICE = "redis"
BUS_PORT = REDIS_PORT + 10000

CONF_DIR = "/etc/redis"
RUN_DIR = "/run/redis"
SENTINEL_RUN_DIR = "/run/sentinel"
DATA_DIR = "/data"
REDIS_UID = "999"
# SIGTERM with `shutdown-on-sigterm save` in redis.conf: the AOF is flushed and an RDB
# written before the server exits; the grace period leaves room for that write.
STOP = Stop("SIGTERM", 120)
# A transition's source network, as the source stack exports it (scaling.promotion).
SOURCE_NETWORK = token("docker", "network")


def _secret() -> dict[str, str]:
    return {SECRET_VARIABLES["redis-password"]: "redis-password"}


def data_node_count(spec: PhaseSpec) -> int:
    redis = spec.redis
    return {"standalone": 1, "sentinel": 1 + redis.replicas, "cluster": redis.cluster_nodes}[
        redis.mode
    ]


def cluster_role(spec: PhaseSpec, index: int) -> tuple[str, int]:
    """("cluster-master", index) or ("cluster-replica", index of its master)."""
    size = 1 + spec.redis.replicas_per_master
    master = index - index % size
    return ("cluster-master" if index == master else "cluster-replica"), master


def sentinel_endpoints(spec: PhaseSpec) -> list[Endpoint]:
    return [
        Endpoint(node_host(spec, SENTINEL_GROUP, i), SENTINEL_PORT)
        for i in range(spec.redis.sentinels)
    ]


def data_endpoint(spec: PhaseSpec, index: int) -> Endpoint:
    return Endpoint(node_host(spec, GROUP, index), REDIS_PORT)


def _ping(cli: str, port: int) -> HealthCheck:
    return HealthCheck(f'REDISCLI_AUTH="$REDIS_PASSWORD" {cli} -p {port} ping | grep -q PONG')


def config_files(spec: PhaseSpec) -> tuple[ConfigFile, ConfigFile | None]:
    """redis.conf for every data node, sentinel.conf (a template) for every Sentinel."""
    conf = ConfigFile(
        f"{CONF_DIR}/redis.conf",
        render_redis_conf(
            spec,
            RedisLayout(port=REDIS_PORT, data_dir=DATA_DIR, secrets_file=f"{RUN_DIR}/secrets.conf"),
        ),
        "redis.conf",
    )
    if spec.redis.mode != "sentinel":
        return conf, None
    template = ConfigFile(
        f"{CONF_DIR}/sentinel.conf",
        render_sentinel_conf(
            spec,
            SentinelLayout(port=SENTINEL_PORT, data_dir=SENTINEL_RUN_DIR),
            Endpoint(MASTER_TOKEN, REDIS_PORT),
        ),
        "sentinel.conf",
    )
    return conf, template


def node_memory_mb(spec: PhaseSpec) -> int:
    # maxmemory plus fragmentation and buffers.
    memory = spec.redis.memory_per_node_mb
    return memory + memory // 4 + 64


def follow_source(spec: PhaseSpec) -> tuple[str, str] | None:
    """A transition's target (sikka:promoteFrom, before the cut-over): its master replicates
    from the source's Redis, at the address the source stack exports (on Docker the source
    master's container name, reached over the source's transition network). A Redis Cluster
    target starts empty (its keys are copied in at the cut-over: :func:`importer_node`)."""
    if not following(spec.promotion):
        return None
    if spec.redis.mode == "cluster":
        return None
    return token("redis", "host"), token("redis", "port")


def transition_networks(spec: PhaseSpec, index: int) -> tuple[str, ...]:
    """The Docker networks a data node joins besides the phase's (no alias there): on a
    transition's source (sikka:promoteTo) its master joins the transition network its
    target's master follows it over; on a following target (sikka:promoteFrom, before the
    cut-over) the master joins the source's. Replicas and Sentinels join none."""
    if on_kubernetes(spec) or spec.redis.mode == "cluster" or index != 0:
        return ()
    if following(spec.promotion):
        return (SOURCE_NETWORK,)
    if spec.promote_to is not None:
        return (spec.docker_transition_network,)
    return ()


def cutover_guarded(spec: PhaseSpec) -> bool:
    """A transition's cut-over (sikka:promoteCutover) of a master that followed the
    source's: a guard promotes it before its container is replaced (Docker) or its pods roll
    without --replicaof (Kubernetes, a Job)."""
    promotion = spec.promotion
    return promotion is not None and promotion.cutover and spec.redis.mode != "cluster"


def promoter_node(spec: PhaseSpec) -> Node:
    """One-shot (the Redis image; a Job on Kubernetes): pauses the source master's writes,
    waits until the target's master has their offset, makes it a master (REPLICAOF NO ONE)
    and waits until its AOF is settled, so that the graceful replacement keeps all it received; the
    source's master then refuses writes. Refuses (exit 1, the source unpaused, nothing
    promoted) when the target is not in sync. Its password is the target's own, inherited
    from the source. On Docker it joins the source's transition network; on Kubernetes it
    is a Job the Redis StatefulSet waits for."""
    _, cli = spec.redis.binaries
    script = redis_cutover_script(
        (token("redis", "host"), token("redis", "port")),
        data_endpoint(spec, 0),
        cli=cli,
        password_env=SECRET_VARIABLES["redis-password"],
    )
    return _guard_node(spec, PROMOTER, script)


def _guard_node(spec: PhaseSpec, name: str, script: str, tmpfs: tuple[str, ...] = ()) -> Node:
    """A cut-over's one-shot in the Redis image, with the (inherited) Redis password; on
    Docker it joins the source's transition network."""
    return Node(
        name=name,
        tier="redis",
        role="promoter",
        group=name,
        ordinal=0,
        image=spec.redis.image,
        ports={},
        entrypoint=("sh", "-c", script),
        user=REDIS_UID,
        secret_env=_secret(),
        tmpfs=tmpfs,
        one_shot=True,
        extra_networks=() if on_kubernetes(spec) else (SOURCE_NETWORK,),
    )


def imports_keys(spec: PhaseSpec) -> bool:
    """A transition's cut-over (sikka:promoteCutover) onto a Redis Cluster: it cannot have
    followed the source (a cluster replicates no standalone master), so its keys are copied
    in at the cut-over."""
    promotion = spec.promotion
    return promotion is not None and promotion.cutover and spec.redis.mode == "cluster"


def importer_node(spec: PhaseSpec) -> Node:
    """One-shot (the Redis image, a Job on Kubernetes): pauses the source master's writes,
    copies every key into the cluster (DUMP / RESTORE on the master owning each slot),
    checks the count, then has the source's master refuse writes. Refuses (exit 1, the
    source unpaused) when the cluster is not formed, holds keys of its own or refuses the
    copy. Its password is the target's own, inherited from the source. On Docker it joins
    the source's transition network."""
    _, cli = spec.redis.binaries
    masters = [
        data_endpoint(spec, index)
        for index in range(data_node_count(spec))
        if cluster_role(spec, index)[0] == "cluster-master"
    ]
    script = redis_import_script(
        (token("redis", "host"), token("redis", "port")),
        masters,
        cli=cli,
        password_env=SECRET_VARIABLES["redis-password"],
    )
    # Its counts (never a value or a key) are written to /tmp while it runs.
    return _guard_node(spec, IMPORTER, script, tmpfs=("/tmp",))


def redis_tier(spec: PhaseSpec) -> tuple[list[Node], list[Service], list[Edge]]:
    redis = spec.redis
    _, cli = redis.binaries
    conf, template = config_files(spec)
    first_master = node_host(spec, GROUP, 0)
    scripts = {
        follow: data_start_script(
            spec,
            conf=conf.path,
            secrets_file=f"{RUN_DIR}/secrets.conf",
            data_dir=DATA_DIR,
            port=REDIS_PORT,
            sentinels=sentinel_endpoints(spec),
            first_master=first_master,
            follow=follow_source(spec) if follow else None,
            # Docker: the source sees the master by its container name, unique on the host.
            follow_announce=None if on_kubernetes(spec) else f"{spec.name_prefix}-{first_master}",
        )
        for follow in (False, True)
    }
    nodes: list[Node] = []
    edges: list[Edge] = []
    ports = {"redis": REDIS_PORT}
    if redis.mode == "cluster":
        ports["cluster-bus"] = BUS_PORT
    for index in range(data_node_count(spec)):
        name = node_name(GROUP, index)
        replica_of: str | None = None
        if redis.mode == "standalone":
            role = "standalone"
        elif redis.mode == "sentinel":
            role = "replica" if index else "master"
            replica_of = node_name(GROUP, 0) if index else None
        else:
            role, master = cluster_role(spec, index)
            replica_of = node_name(GROUP, master) if master != index else None
        if replica_of:
            edges.append(Edge(name, replica_of, "replicates-from"))
        nodes.append(
            Node(
                name=name,
                tier="redis",
                role=role,  # type: ignore[arg-type]
                group=GROUP,
                ordinal=index,
                image=redis.image,
                ports=ports,
                replica_of=replica_of,
                # On Kubernetes one script for the whole StatefulSet (it adds --replicaof
                # to the master alone); on Docker the master's alone names the source, so
                # the cut-over replaces that one container and no replica.
                entrypoint=(
                    "sh",
                    "-c",
                    scripts[on_kubernetes(spec) or index == 0],
                    "redis-start",
                ),
                user=REDIS_UID,
                env={"NODE_HOST": node_host(spec, GROUP, index)},
                secret_env=_secret(),
                files=(conf,),
                volumes=(Volume(f"{name}-data", DATA_DIR, redis.storage_gb),),
                tmpfs=(RUN_DIR,),
                health=_ping(cli, REDIS_PORT),
                stop=STOP,
                memory_mb=node_memory_mb(spec),
                extra_networks=transition_networks(spec, index),
            )
        )
    services: list[Service] = []
    if redis.mode == "standalone":
        services.append(Service(STANDALONE_SERVICE, "redis", REDIS_PORT, (nodes[0].name,), "redis"))
    if template is not None:
        sentinel_start = sentinel_start_script(
            spec,
            template=template.path,
            conf=f"{SENTINEL_RUN_DIR}/sentinel.conf",
            port=SENTINEL_PORT,
            sentinels=sentinel_endpoints(spec),
            first_master=first_master,
        )
        for index in range(redis.sentinels):
            name = node_name(SENTINEL_GROUP, index)
            nodes.append(
                Node(
                    name=name,
                    tier="redis",
                    role="sentinel",
                    group=SENTINEL_GROUP,
                    ordinal=index,
                    image=redis.image,
                    ports={"sentinel": SENTINEL_PORT},
                    entrypoint=("sh", "-c", sentinel_start, "sentinel-start"),
                    user=REDIS_UID,
                    env={"NODE_HOST": node_host(spec, SENTINEL_GROUP, index)},
                    secret_env=_secret(),
                    files=(template,),
                    tmpfs=(SENTINEL_RUN_DIR,),
                    health=_ping(cli, SENTINEL_PORT),
                    stop=Stop("SIGTERM", 10),
                    memory_mb=128,
                )
            )
            edges.append(Edge(name, node_name(GROUP, 0), "monitors"))
    if cutover_guarded(spec):
        nodes.append(promoter_node(spec))
        # The master is replaced (without --replicaof) only once the guard promoted it; the
        # guard runs once PostgreSQL's cut-over succeeded.
        edges.append(Edge(node_name(GROUP, 0), PROMOTER, "waits-for"))
        edges.append(Edge(PROMOTER, POSTGRES_PROMOTER, "waits-for"))
    if redis.mode == "cluster":
        nodes.append(cluster_init_node(spec, [n for n in nodes if n.tier == "redis"]))
        # It forms the cluster from every data node: it runs once they all answer.
        edges.append(Edge(CLUSTER_INIT, GROUP, "connects-to"))
    if imports_keys(spec):
        nodes.append(importer_node(spec))
        # It waits (bounded) for the cluster to form; PostgreSQL's cut-over runs first.
        edges.append(Edge(IMPORTER, CLUSTER_INIT, "waits-for"))
        edges.append(Edge(IMPORTER, POSTGRES_PROMOTER, "waits-for"))
    return nodes, services, edges


def cluster_init_node(spec: PhaseSpec, data_nodes: list[Node]) -> Node:
    """One-shot: forms the cluster, or joins added nodes and rebalances; safe to re-run."""
    masters = [data_endpoint(spec, n.ordinal) for n in data_nodes if n.role == "cluster-master"]
    replicas = {
        str(data_endpoint(spec, n.ordinal)): str(
            data_endpoint(spec, int(n.replica_of.rsplit("-", 1)[1]))
        )
        for n in data_nodes
        if n.replica_of
    }
    return Node(
        name=CLUSTER_INIT,
        tier="redis",
        role="cluster-init",
        group=CLUSTER_INIT,
        ordinal=0,
        image=spec.redis.image,
        ports={},
        entrypoint=("sh", "-c", cluster_script(spec, masters, replicas)),
        user=REDIS_UID,
        secret_env=_secret(),
        one_shot=True,
    )

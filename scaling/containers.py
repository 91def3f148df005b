"""The container view of a phase: the services the Docker stack and docker-compose run.

Pure data, built once from the PhaseSpec with the shared renderers; the Pulumi Docker
components and the docker-compose renderer both read it, so they cannot drift apart.
Secrets are named (e.g. "redis-password"), never carried.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.env import SECRET_VARIABLES
from scaling.render.gateway_env import database_env, gateway_env, redis_client_env
from scaling.render.nginx import NginxLayout, render_nginx_conf
from scaling.render.pgbouncer import POOLER_PORT, PoolerLayout, render_pgbouncer_ini, userlist_sh
from scaling.render.postgres import (
    PG_PORT,
    REPLICATION_USER,
    PostgresLayout,
    render_pg_hba_conf,
    render_postgresql_conf,
    render_replication_role_sql,
    replication_slot,
)
from scaling.render.redis import (
    ESCAPE_PASSWORD_SH,
    REDIS_PORT,
    SECRETS_FILE_SH,
    SENTINEL_PORT,
    RedisLayout,
    SentinelLayout,
    redis_node_args,
    render_cluster_create_script,
    render_redis_conf,
    render_sentinel_conf,
    sentinel_auth_sh,
    sentinel_node_args,
)

Tier = Literal["postgres", "redis", "gateway", "nginx"]

PG_CONF_DIR = "/etc/postgresql"
PG_DATA = "/var/lib/postgresql/data"
REPLICA_ALIAS = "postgres-replicas"


@dataclass(frozen=True)
class ConfigFile:
    """A rendered file mounted read-only into the container."""

    path: str
    content: str
    # The name `sikka-scaling render` writes it under (several containers may share one).
    render_name: str


@dataclass(frozen=True)
class HealthCheck:
    test: tuple[str, ...]
    interval_seconds: int = 10
    timeout_seconds: int = 5
    retries: int = 6
    start_period_seconds: int = 20


@dataclass(frozen=True)
class Container:
    name: str  # also its DNS name on the private network
    tier: Tier
    role: str
    image: str
    command: tuple[str, ...]
    healthcheck: HealthCheck
    entrypoint: tuple[str, ...] | None = None
    user: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    # Environment variable → secret name (keys of SECRET_VARIABLES).
    secret_env: Mapping[str, str] = field(default_factory=dict)
    files: tuple[ConfigFile, ...] = ()
    volumes: Mapping[str, str] = field(default_factory=dict)  # volume name → mount path
    tmpfs: tuple[str, ...] = ()  # writable scratch paths, world-writable with sticky bit
    ports: tuple[int, ...] = ()
    published: Mapping[int, int] = field(default_factory=dict)  # host port → container port
    aliases: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    memory_mb: int | None = None


def _secret(name: str) -> dict[str, str]:
    return {SECRET_VARIABLES[name]: name}


def _shell(script: str) -> tuple[str, ...]:
    return ("sh", "-c", script)


def _pg_layout(spec: PhaseSpec) -> PostgresLayout:
    return PostgresLayout(
        port=PG_PORT, hba_file=f"{PG_CONF_DIR}/pg_hba.conf", private_networks=(spec.docker.subnet,)
    )


REPLICA_ENTRYPOINT = f"""\
#!/bin/sh
# Bootstraps a streaming replica from the primary on first start (pg_basebackup into an
# empty volume), then runs it as a hot standby. The password comes from the environment.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do sleep 1; done
  export PGPASSWORD="$REPLICATION_PASSWORD"
  create_slot=--create-slot
  if psql -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U {REPLICATION_USER} -d postgres -tAc \\
      "SELECT 1 FROM pg_replication_slots WHERE slot_name = '$REPLICATION_SLOT'" | grep -q 1; then
    create_slot=
  fi
  pg_basebackup -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U {REPLICATION_USER} -D "$PGDATA" \\
    --write-recovery-conf --wal-method=stream --checkpoint=fast \\
    $create_slot --slot="$REPLICATION_SLOT"
  unset PGPASSWORD
  chmod 0700 "$PGDATA"
fi
exec postgres -c config_file={PG_CONF_DIR}/postgresql.conf
"""

REPLICATION_ROLE_INIT = f"""\
#!/bin/sh
# Runs once, when the primary's volume is initialised: creates the replication role.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \\
  --set replication_password="$REPLICATION_PASSWORD" <<'SQL'
{render_replication_role_sql()}SQL
"""


def postgres_containers(spec: PhaseSpec) -> list[Container]:
    pg = spec.postgres
    layout = _pg_layout(spec)
    conf = ConfigFile(
        f"{PG_CONF_DIR}/postgresql.conf", render_postgresql_conf(spec, layout), "postgresql.conf"
    )
    hba = ConfigFile(f"{PG_CONF_DIR}/pg_hba.conf", render_pg_hba_conf(spec, layout), "pg_hba.conf")
    ready = HealthCheck(("CMD-SHELL", f"pg_isready -q -h 127.0.0.1 -p {PG_PORT}"))
    files = [conf, hba]
    if pg.read_replicas:
        files.append(
            ConfigFile(
                "/docker-entrypoint-initdb.d/10-replication-role.sh",
                REPLICATION_ROLE_INIT,
                "10-replication-role.sh",
            )
        )
    primary = Container(
        name="postgres-primary",
        tier="postgres",
        role="primary",
        image=pg.image,
        command=("postgres", "-c", f"config_file={PG_CONF_DIR}/postgresql.conf"),
        healthcheck=ready,
        env={"POSTGRES_USER": pg.user, "POSTGRES_DB": pg.database, "PGDATA": PG_DATA},
        secret_env={**_secret("postgres-password"), **_secret("replication-password")}
        if pg.read_replicas
        else _secret("postgres-password"),
        files=tuple(files),
        volumes={"postgres-primary-data": "/var/lib/postgresql/data"},
        ports=(PG_PORT,),
        memory_mb=pg.memory_mb,
    )
    containers = [primary]
    for index in range(1, pg.read_replicas + 1):
        containers.append(
            Container(
                name=f"postgres-replica-{index}",
                tier="postgres",
                role="replica",
                image=pg.image,
                entrypoint=("sh", f"{PG_CONF_DIR}/replica-entrypoint.sh"),
                command=(),
                user="postgres",
                healthcheck=ready,
                env={
                    "PGDATA": PG_DATA,
                    "PRIMARY_HOST": primary.name,
                    "PRIMARY_PORT": str(PG_PORT),
                    "REPLICATION_SLOT": replication_slot(index),
                },
                secret_env=_secret("replication-password"),
                files=(
                    conf,
                    hba,
                    ConfigFile(
                        f"{PG_CONF_DIR}/replica-entrypoint.sh",
                        REPLICA_ENTRYPOINT,
                        "replica-entrypoint.sh",
                    ),
                ),
                volumes={f"postgres-replica-{index}-data": "/var/lib/postgresql/data"},
                ports=(PG_PORT,),
                # One alias for every replica: PgBouncer's read-only pool resolves it and
                # spreads connections over all of them (DNS round-robin).
                aliases=(REPLICA_ALIAS,),
                depends_on=(primary.name,),
                memory_mb=pg.memory_mb,
            )
        )
    if spec.pooler.enabled:
        containers.append(pooler_container(spec, [c.name for c in containers[1:]]))
    return containers


def pooler_container(spec: PhaseSpec, replica_names: list[str]) -> Container:
    layout = PoolerLayout(
        listen=Endpoint("0.0.0.0", POOLER_PORT),
        primary=Endpoint("postgres-primary", PG_PORT),
        replica_hosts=(REPLICA_ALIAS,) if replica_names else (),
        replica_port=PG_PORT,
        auth_file="/run/pgbouncer/userlist.txt",
    )
    user = spec.postgres.user
    # The auth file is written from the secret at start-up, into a tmpfs, never an image.
    start = (
        f"set -eu\numask 077\n{userlist_sh(user)} > /run/pgbouncer/userlist.txt\n"
        "exec pgbouncer /etc/pgbouncer/pgbouncer.ini\n"
    )
    return Container(
        name="pgbouncer",
        tier="postgres",
        role="pooler",
        image=spec.pooler.image,
        entrypoint=_shell(start),
        command=(),
        healthcheck=HealthCheck(("CMD-SHELL", f"nc -z 127.0.0.1 {POOLER_PORT}")),
        secret_env=_secret("postgres-password"),
        files=(
            ConfigFile(
                "/etc/pgbouncer/pgbouncer.ini", render_pgbouncer_ini(spec, layout), "pgbouncer.ini"
            ),
        ),
        tmpfs=("/run/pgbouncer",),
        ports=(POOLER_PORT,),
        depends_on=("postgres-primary", *replica_names),
    )


def _redis_start(spec: PhaseSpec, conf: str, *, sentinel: bool = False) -> str:
    """Write the password into a tmpfs file the config includes (or, for Sentinel, append it
    to a writable copy, since Sentinel rewrites its own file), then exec the server."""
    server, _ = spec.redis.binaries
    if sentinel:
        return (
            f"set -eu\numask 077\n{ESCAPE_PASSWORD_SH}\n"
            "cp /etc/redis/sentinel.conf /data/sentinel.conf\n"
            f"{sentinel_auth_sh(spec)} >> /data/sentinel.conf\n"
            f'exec {server} /data/sentinel.conf --sentinel "$@"\n'
        )
    return (
        f"set -eu\numask 077\n{SECRETS_FILE_SH} > /run/redis/secrets.conf\n"
        f'exec {server} {conf} "$@"\n'
    )


def data_nodes(spec: PhaseSpec) -> int:
    redis = spec.redis
    return {"standalone": 1, "sentinel": 1 + redis.replicas, "cluster": redis.cluster_nodes}[
        redis.mode
    ]


def redis_containers(spec: PhaseSpec) -> list[Container]:
    redis = spec.redis
    _, cli = redis.binaries
    conf = ConfigFile(
        "/etc/redis/redis.conf",
        render_redis_conf(spec, RedisLayout(port=REDIS_PORT)),
        "redis.conf",
    )
    ping = HealthCheck(
        ("CMD-SHELL", f'REDISCLI_AUTH="$REDIS_PASSWORD" {cli} -p {REDIS_PORT} ping | grep -q PONG')
    )
    containers = []
    master = Endpoint("redis-0", REDIS_PORT)
    for index in range(data_nodes(spec)):
        name = f"redis-{index}"
        args = redis_node_args(
            spec,
            announce=Endpoint(name, REDIS_PORT),
            master=master if redis.mode == "sentinel" and index else None,
        )
        role = {"standalone": "standalone", "cluster": "cluster-node"}.get(
            redis.mode, "replica" if index else "master"
        )
        containers.append(
            Container(
                name=name,
                tier="redis",
                role=role,
                image=redis.image,
                entrypoint=(*_shell(_redis_start(spec, "/etc/redis/redis.conf")), "sh"),
                command=tuple(args),
                user="999",
                healthcheck=ping,
                secret_env=_secret("redis-password"),
                files=(conf,),
                volumes={f"{name}-data": "/data"},
                tmpfs=("/run/redis",),
                ports=(REDIS_PORT,),
                depends_on=(master.host,) if redis.mode == "sentinel" and index else (),
                memory_mb=redis.memory_per_node_mb + redis.memory_per_node_mb // 4 + 64,
            )
        )
    if redis.mode == "sentinel":
        sentinel_conf = ConfigFile(
            "/etc/redis/sentinel.conf",
            render_sentinel_conf(spec, SentinelLayout(port=SENTINEL_PORT), master),
            "sentinel.conf",
        )
        for index in range(1, redis.sentinels + 1):
            name = f"sentinel-{index}"
            containers.append(
                Container(
                    name=name,
                    tier="redis",
                    role="sentinel",
                    image=redis.image,
                    entrypoint=(*_shell(_redis_start(spec, "", sentinel=True)), "sh"),
                    command=tuple(sentinel_node_args(Endpoint(name, SENTINEL_PORT))),
                    user="999",
                    healthcheck=HealthCheck(
                        (
                            "CMD-SHELL",
                            f'REDISCLI_AUTH="$REDIS_PASSWORD" {cli} -p {SENTINEL_PORT} ping '
                            "| grep -q PONG",
                        )
                    ),
                    env={"REDIS_MASTER_NAME": redis.master_name},
                    secret_env=_secret("redis-password"),
                    files=(sentinel_conf,),
                    volumes={f"{name}-data": "/data"},
                    ports=(SENTINEL_PORT,),
                    depends_on=tuple(f"redis-{i}" for i in range(1 + redis.replicas)),
                    memory_mb=128,
                )
            )
    if redis.mode == "cluster":
        containers.append(cluster_creator(spec, [c.name for c in containers]))
    return containers


def cluster_creator(spec: PhaseSpec, node_names: list[str]) -> Container:
    """A one-shot container that forms the cluster once every node answers; it does nothing
    when the cluster already exists, so re-running `pulumi up` is safe."""
    return Container(
        name="redis-cluster-init",
        tier="redis",
        role="cluster-init",
        image=spec.redis.image,
        entrypoint=_shell(render_cluster_create_script(spec, node_names, REDIS_PORT)),
        command=(),
        user="999",
        healthcheck=HealthCheck(("NONE",)),
        secret_env=_secret("redis-password"),
        depends_on=tuple(node_names),
    )


def gateway_containers(spec: PhaseSpec) -> list[Container]:
    gw, pg = spec.gateway, spec.postgres
    db_host, db_port = (
        ("pgbouncer", POOLER_PORT) if spec.pooler.enabled else ("postgres-primary", PG_PORT)
    )
    health = (
        'python -c "import urllib.request; '
        f"urllib.request.urlopen('http://127.0.0.1:{gw.port}/healthz', timeout=3)\""
    )
    redis_nodes = data_nodes(spec)
    containers = []
    for index in range(1, gw.replicas + 1):
        name = f"gateway-{index}"
        containers.append(
            Container(
                name=name,
                tier="gateway",
                role="gateway",
                image=gw.image,
                command=(),
                healthcheck=HealthCheck(("CMD-SHELL", health)),
                env={
                    **gateway_env(spec, gateway_id=name, port=gw.port),
                    **redis_client_env(
                        spec,
                        nodes=[Endpoint(f"redis-{i}", REDIS_PORT) for i in range(redis_nodes)],
                        sentinels=[
                            Endpoint(f"sentinel-{i}", SENTINEL_PORT)
                            for i in range(1, spec.redis.sentinels + 1)
                        ],
                    ),
                    **database_env(
                        spec,
                        target=Endpoint(db_host, db_port),
                        read_pool=spec.pooler.enabled and pg.read_replicas > 0,
                    ),
                },
                secret_env={**_secret("redis-password"), "DATABASE_PASSWORD": "postgres-password"},
                ports=(gw.port,),
                depends_on=("redis-0", db_host),
            )
        )
    return containers


def nginx_container(spec: PhaseSpec, gateways: list[Container]) -> Container:
    nginx = spec.nginx
    layout = NginxLayout(
        listen=str(nginx.port),
        status_listen=str(nginx.status_port),
        upstream_servers=tuple(
            f"{g.name}:{spec.gateway.port} max_fails=2 fail_timeout=5s" for g in gateways
        ),
        status_allow=("127.0.0.1", spec.docker.subnet),
    )
    return Container(
        name="nginx",
        tier="nginx",
        role="proxy",
        image=nginx.image,
        command=("nginx", "-g", "daemon off;"),
        healthcheck=HealthCheck(("CMD-SHELL", f"curl -fsS http://127.0.0.1:{nginx.port}/healthz")),
        files=(ConfigFile("/etc/nginx/nginx.conf", render_nginx_conf(spec, layout), "nginx.conf"),),
        ports=(nginx.port, nginx.status_port),
        published={spec.docker.http_port: nginx.port},
        depends_on=tuple(g.name for g in gateways),
    )


def build_containers(spec: PhaseSpec) -> dict[Tier, list[Container]]:
    gateways = gateway_containers(spec)
    return {
        "postgres": postgres_containers(spec),
        "redis": redis_containers(spec),
        "gateway": gateways,
        "nginx": [nginx_container(spec, gateways)],
    }

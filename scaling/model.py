"""The typed phase model: one pydantic model per tier, composed into a PhaseSpec.

Stack files spell keys in camelCase (Pulumi's convention); Python code uses snake_case.
Cross-field rules live in :mod:`scaling.rules` so that every problem is reported at once.
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel


class Phase(StrEnum):
    LAUNCH = "launch"
    GROWTH = "growth"
    SCALE = "scale"

    @property
    def next(self) -> Phase | None:
        order = list(Phase)
        index = order.index(self)
        return order[index + 1] if index + 1 < len(order) else None


class PlatformKind(StrEnum):
    DOCKER = "docker"
    KUBERNETES = "kubernetes"


Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Percent = Annotated[int, Field(ge=1, le=100)]

# An image reference must carry a tag or digest, and not the moving "latest" tag: a phase
# is reproducible only if `pulumi up` pulls the same bits twice.
_PINNED_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$")


def _pinned(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if not _PINNED_IMAGE.match(image) or (":" not in last and "@" not in image):
        raise ValueError("must be a pinned image reference such as 'nginx:1.27.3'")
    if last.endswith(":latest"):
        raise ValueError("must not use the moving 'latest' tag")
    return image


Image = Annotated[str, AfterValidator(_pinned)]


def _network(value: object) -> object:
    if isinstance(value, str):
        try:
            return ip_network(value, strict=True)
        except ValueError as error:
            raise ValueError(f"must be a network such as '10.213.7.0/24': {error}") from None
    return value


# An IPv4 or IPv6 network in CIDR notation, host bits zero ("10.0.0.0/24").
Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        strict=True,
    )


class Span(Section):
    """A planned range such as 1,000-2,000 users; ``max`` None means open-ended (10k+)."""

    min: Positive
    max: Positive | None = None


class Capacity(Section):
    concurrent_users: Span
    trips: Span


class PostgresSpec(Section):
    mode: Literal["single", "replicated", "citus"]
    image: Image
    max_connections: Annotated[int, Field(ge=10, le=10_000)]
    superuser_reserved_connections: Annotated[int, Field(ge=1, le=20)] = 3
    read_replicas: Count
    memory_mb: Annotated[int, Field(ge=256)]
    storage_gb: Positive
    database: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "sikka"
    user: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}$")] = "sikka"
    # Citus (scale): a coordinator group and N worker shard groups, each with replicas.
    shards: Positive = 4
    coordinator_instances: Positive = 2
    instances_per_shard: Positive = 2

    @property
    def version(self) -> str | None:
        """The Postgres version the image tag names ("17.6-bookworm" → "17.6"), if any."""
        last = self.image.rsplit("/", 1)[-1]
        tag = last.rsplit(":", 1)[-1] if ":" in last else ""
        match = re.match(r"^(\d+)(?:\.(\d+))?", tag)
        return match.group(0) if match else None

    @property
    def usable_connections(self) -> int:
        """Connections left for clients once superuser slots are reserved."""
        return self.max_connections - self.superuser_reserved_connections


class PoolerSpec(Section):
    enabled: bool
    image: Image = "edoburu/pgbouncer:v1.25.1-p0"
    pool_mode: Literal["transaction", "session", "statement"] = "transaction"
    max_client_conn: Positive = 1000
    default_pool_size: Positive = 20
    read_pool_size: Positive = 20
    reserve_pool_size: Count = 5


EvictionPolicy = Literal[
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]


class RedisSpec(Section):
    mode: Literal["standalone", "sentinel", "cluster"]
    # Valkey is the BSD-licensed fork of Redis 7.2; Redis 7.4+ is RSALv2/SSPL (Redis 8 adds
    # AGPLv3). The image stays configurable for teams licensed for Redis.
    image: Image = "valkey/valkey:8.1.4"
    max_memory_mb: Positive
    eviction_policy: EvictionPolicy = "allkeys-lru"
    max_clients: Positive = 10_000
    replicas: Count = 0
    sentinels: Count = 0
    quorum: Count = 0
    master_name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")] = "sikka"
    min_replicas_to_write: Count = 0
    min_replicas_max_lag_seconds: Positive = 10
    masters: Count = 0
    replicas_per_master: Count = 0
    cluster_node_timeout_ms: Annotated[int, Field(ge=500)] = 5000
    # Disk per data node (AOF + RDB). Kept apart from max_memory_mb so that a memory change
    # never touches a volume (on Kubernetes, volumeClaimTemplates are immutable).
    storage_gb: Positive = 1

    @property
    def binaries(self) -> tuple[str, str]:
        """(server, cli) for the image: Valkey images ship valkey-*, Redis images redis-*."""
        engine = "valkey" if "valkey" in self.image.rsplit("/", 1)[-1] else "redis"
        return f"{engine}-server", f"{engine}-cli"

    @property
    def memory_per_node_mb(self) -> int:
        """In a cluster the phase's memory is split over the masters (replicas mirror them)."""
        if self.mode == "cluster":
            return max(1, self.max_memory_mb // max(1, self.masters))
        return self.max_memory_mb

    @property
    def cluster_nodes(self) -> int:
        return self.masters * (1 + self.replicas_per_master)


def _jwks_url(url: str) -> str:
    # Keys fetched over plain HTTP could be swapped by anyone on the path.
    loopback = re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/", url)
    if not url.startswith("https://") and not loopback:
        raise ValueError("must be an https:// URL (plain http only on loopback)")
    return url


def _origin(value: str) -> str:
    if value != "*" and not re.match(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?/?$", value):
        raise ValueError("must be '*' or scheme://host[:port], such as 'https://app.example.com'")
    return value


class GatewayAuthSpec(Section):
    """Client authentication at the gateways (gateway/README.md, "Authentication").

    ``required``: every client presents a JWT; HS256 with the phase's generated
    ``gateway-jwt-secret`` unless ``jwks_url`` names the identity provider's keys (RS256 /
    ES256). ``disabled`` lets anyone subscribe and publish: only ever set on purpose.
    """

    mode: Literal["required", "disabled"] = "required"
    jwks_url: Annotated[str, AfterValidator(_jwks_url)] | None = None
    # Checked against the tokens' `iss` / `aud` when set (then tokens must carry them).
    issuer: Annotated[str, Field(min_length=1)] | None = None
    audience: Annotated[str, Field(min_length=1)] | None = None
    # Browser origins allowed to connect ("*": any). Clients sending no Origin (native
    # apps, servers) are always let through: their token authenticates them.
    allowed_origins: Annotated[
        tuple[Annotated[str, AfterValidator(_origin)], ...],
        BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v),
    ] = ()

    @property
    def shared_secret(self) -> bool:
        """Whether tokens are HS256 with the phase's gateway-jwt-secret."""
        return self.mode == "required" and self.jwks_url is None


class GatewaySpec(Section):
    image: Image = "ghcr.io/sikka-scaling/gateway:0.1.0"
    # On Docker the image is built from this folder of the project (the reference gateway)
    # and tagged `image`; null pulls `image` instead. Kubernetes always pulls `image`.
    build_context: str | None = "gateway"
    max_connections: Positive
    replicas: Positive
    max_replicas: Positive
    connections_per_replica: Positive
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    drain_seconds: Annotated[int, Field(ge=1, le=3600)] = 30
    # Prometheus scrapes /metrics here, a port clients never reach.
    metrics_port: Annotated[int, Field(ge=1024, le=65535)] = 9102
    auth: GatewayAuthSpec = GatewayAuthSpec()


class NginxSpec(Section):
    image: Image = "nginx:1.29.3"
    worker_connections: Annotated[int, Field(ge=512, le=1_048_576)]
    worker_processes: Annotated[int, Field(ge=1, le=128)]
    replicas: Positive = 1
    max_replicas: Positive = 1
    port: Annotated[int, Field(ge=1, le=65535)] = 80
    status_port: Annotated[int, Field(ge=1, le=65535)] = 8081
    # WebSockets live for minutes or hours: an idle trip screen must not be cut at nginx's
    # 60 s default.
    websocket_read_timeout_seconds: Annotated[int, Field(ge=60, le=86_400)] = 3600

    @property
    def worker_rlimit_nofile(self) -> int:
        # Every proxied connection holds two descriptors (client side and upstream side).
        return 2 * self.worker_connections

    @property
    def connection_capacity(self) -> int:
        return self.worker_connections * self.worker_processes * self.replicas


class Thresholds(Section):
    """Monitoring limits: staying below them keeps the phase healthy."""

    cpu_percent: Percent
    memory_percent: Percent
    connections_percent: Percent


class AutoscalingSpec(Section):
    enabled: bool
    cpu_target_percent: Percent = 70
    memory_target_percent: Percent = 80


class KubernetesSpec(Section):
    # None: derived from the stack name (sikka-<stack>), so two stacks never share one.
    namespace: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")] | None = None
    install_operator: bool = False
    operator_version: str = "1.18.6"
    storage_class: str | None = None
    nginx_service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"


class DockerSpec(Section):
    # None: derived from the stack name. Containers and volumes are named from the stack,
    # never from the network, so renaming the network leaves every volume where it was.
    network: Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")] | None = None
    # Host port Nginx publishes; everything else stays on the private network.
    http_port: Annotated[int, Field(ge=1, le=65535)] = 8080
    # None: a /24 inside 10.213.0.0/16 chosen from the stack name.
    subnet: Network | None = None


class PhaseSpec(Section):
    """Everything a phase is: the single source for stacks, renderers, checker and alerts."""

    phase: Phase
    platform: PlatformKind
    # The Pulumi stack this spec was read for: physical names derive from it.
    stack: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    capacity: Capacity
    postgres: PostgresSpec
    pooler: PoolerSpec
    redis: RedisSpec
    gateway: GatewaySpec
    nginx: NginxSpec
    thresholds: Thresholds
    autoscaling: AutoscalingSpec
    kubernetes: KubernetesSpec = KubernetesSpec()
    docker: DockerSpec = DockerSpec()
    # Stateful resources (volumes, namespace, database clusters) are created with Pulumi's
    # `protect`: deleting or replacing them needs this set to false first, on purpose.
    protect_data: bool = True

    # strict=True would refuse "launch" for the enums when read from YAML.
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )

    @property
    def name_prefix(self) -> str:
        """Every physical name (containers, volumes, default network) starts with this."""
        return f"sikka-{_dns_label(self.stack)}"

    @property
    def namespace(self) -> str:
        return self.kubernetes.namespace or self.name_prefix[:63].rstrip("-")

    @property
    def docker_network(self) -> str:
        return self.docker.network or self.name_prefix

    @property
    def docker_subnet(self) -> IPv4Network | IPv6Network:
        if self.docker.subnet is not None:
            return self.docker.subnet
        digest = hashlib.sha256(self.stack.encode()).digest()
        return IPv4Network(f"10.213.{digest[0]}.0/24")


def _dns_label(text: str) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return label or "stack"

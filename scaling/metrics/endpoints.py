"""Where the parts of a running phase answer, and with which credentials.

One :class:`Endpoints` record feeds every direct probe. It is built from a `local up --json`
document (:func:`from_summary`, pure) plus the run's secrets, which come from the run's
``secrets.json`` (mode 0600) for ``--local`` / ``--endpoints`` and never from the document
itself: the document names the secrets file, it does not carry passwords.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from scaling.model import POOLER_ADMIN_USER, SUPERUSER, PhaseSpec, PlatformKind
from scaling.topology.monitoring import NODE_EXPORTER
from scaling.topology.network import CLUSTER_DOMAIN


class EndpointsError(ValueError):
    """An endpoints document that does not say where the parts are."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Endpoints:
    """Every address a direct check probes. An empty tuple: that part is not checked."""

    stack: str
    postgres: tuple[HostPort, ...] = ()  # every member: primary and replicas alike
    database: str = "postgres"
    postgres_user: str = SUPERUSER
    postgres_password: str | None = field(default=None, repr=False)
    poolers: tuple[HostPort, ...] = ()
    pooler_user: str = POOLER_ADMIN_USER
    pooler_password: str | None = field(default=None, repr=False)
    redis: tuple[HostPort, ...] = ()  # every data node (masters, replicas)
    sentinels: tuple[HostPort, ...] = ()
    redis_password: str | None = field(default=None, repr=False)
    # Every gateway: the /metrics URLs of its processes (worker i on metrics_port + i).
    gateways: tuple[tuple[str, ...], ...] = ()
    nginx: tuple[str, ...] = ()  # every stub_status URL
    prometheus: str | None = None
    host: bool = True  # probe this machine with psutil
    # Names that only the platform's own network resolves (Docker container names, cluster
    # DNS), and that network in words: a part there that does not resolve here is
    # unreachable for that reason, without a connection attempted.
    private_hosts: frozenset[str] = frozenset()
    private_network: str = ""
    notes: tuple[str, ...] = ()  # said with every check of these endpoints
    # Address a probe names its part by ("host:port", or a status URL's "host:port") → the
    # topology node there, so a direct reading's instance is the node measured, as the
    # ``instance`` label of the Prometheus check's series is. An address not named stays.
    names: Mapping[str, str] = field(default_factory=dict)
    host_name: str | None = None  # this machine's node (its node-exporter), when it has one


def parse_hostport(text: str, where: str) -> HostPort:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointsError(f"{where}: expected host:port, got {text!r}")
    return HostPort(host.strip("[]"), int(port))


def url_hosts(url: str, where: str) -> list[HostPort]:
    """The hosts of a libpq URL, multi-host ones included (postgresql://u@h1:p,h2:p/db)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres", "redis", "rediss"):
        raise EndpointsError(f"{where}: expected a postgresql:// or redis:// URL, got {url!r}")
    netloc = parts.netloc.rpartition("@")[2]
    if not netloc:
        raise EndpointsError(f"{where}: no host in {url!r}")
    return [parse_hostport(item, where) for item in netloc.split(",")]


def _lookup(doc: Mapping[str, Any], path: str, source: str) -> Any:
    """The value at a dotted ``path`` of ``doc``; an EndpointsError naming the path in
    ``source`` when it is missing."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise EndpointsError(f"{source}: {path} is missing")
        value = value[part]
    return value


def _get(doc: Mapping[str, Any], path: str) -> Any:
    return _lookup(doc, path, "endpoints document")


def _gateway_metrics(url: str, processes: int) -> list[str]:
    """Worker i of a gateway with several processes serves /metrics on metrics_port + i."""
    if processes <= 1:
        return [url]
    parts = urlsplit(url)
    if parts.port is None:
        raise EndpointsError(f"endpoints document: gateways[].metrics_url {url!r} has no port")
    return [
        parts._replace(netloc=f"{parts.hostname}:{parts.port + i}").geturl()
        for i in range(processes)
    ]


def from_summary(
    doc: Mapping[str, Any], secrets: Mapping[str, str], spec: PhaseSpec | None = None
) -> Endpoints:
    """Endpoints of a `local up --json` document; ``secrets`` are the run's (by name).

    Postgres is probed as the superuser (pg_stat_replication's positions and
    pg_stat_statements are not the application role's to read), PgBouncer through its
    console as its admin. ``spec`` supplies the gateway's processes per replica."""
    pg = _get(doc, "postgres")
    members = pg.get("members") or []
    urls = [m["url"] for m in members] if members else [pg["primary"], *pg.get("replicas", [])]
    postgres: list[HostPort] = []
    for url in urls:
        for hp in url_hosts(url, "postgres"):
            if hp not in postgres:
                postgres.append(hp)
    poolers = url_hosts(pg["pooler"], "postgres.pooler") if pg.get("pooler") else []
    database = doc.get("database") or {}
    redis = _get(doc, "redis")
    if redis.get("mode") == "standalone":
        redis_nodes = url_hosts(str(redis["url"]), "redis.url")
    else:
        redis_nodes = [parse_hostport(n, "redis.nodes") for n in redis.get("nodes", [])]
    sentinels = [parse_hostport(n, "redis.sentinels") for n in redis.get("sentinels", [])]
    processes = spec.gateway.processes if spec is not None else 1
    gateways = [
        tuple(str(u) for u in g["worker_metrics_urls"])
        if g.get("worker_metrics_urls")
        else tuple(_gateway_metrics(str(g["metrics_url"]), processes))
        for g in doc.get("gateways", [])
    ]
    nginx = doc.get("nginx") or {}
    prometheus = (doc.get("prometheus") or {}).get("url")
    names, host_name = _node_names(doc, members)
    return Endpoints(
        stack=str(doc.get("stack", "")),
        postgres=tuple(postgres),
        database=str(database.get("name") or "postgres"),
        postgres_user=str(database.get("superuser") or SUPERUSER),
        postgres_password=secrets.get("postgres-superuser-password"),
        poolers=tuple(poolers),
        pooler_user=str(database.get("pooler_admin") or POOLER_ADMIN_USER),
        pooler_password=secrets.get("pgbouncer-admin-password"),
        redis=tuple(redis_nodes),
        sentinels=tuple(sentinels),
        redis_password=secrets.get("redis-password"),
        gateways=tuple(gateways),
        nginx=(str(nginx["status_url"]),) if nginx.get("status_url") else (),
        prometheus=str(prometheus) if prometheus else None,
        names=names,
        host_name=host_name,
    )


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.hostname and parts.port else ""


def _node_names(
    doc: Mapping[str, Any], members: list[Mapping[str, Any]]
) -> tuple[dict[str, str], str | None]:
    """(address → node name, this machine's node) of a `local up --json` document: the
    processes it lists (the first of several sharing an address: a pooler's own processes
    after the first are named after it), the Patroni members, the gateways by their first
    worker's /metrics and Nginx by its status address."""
    names: dict[str, str] = {}
    processes = [p for p in doc.get("processes") or [] if isinstance(p, Mapping)]
    for process in processes:
        if process.get("port") and process.get("name"):
            address = f"{process.get('host') or '127.0.0.1'}:{process['port']}"
            names.setdefault(address, str(process["name"]))
    for member in members:
        for hp in url_hosts(str(member["url"]), "postgres.members"):
            if member.get("name"):
                names[str(hp)] = str(member["name"])
    for gateway in doc.get("gateways") or []:
        urls = gateway.get("worker_metrics_urls") or [gateway.get("metrics_url")]
        if gateway.get("id") and urls[0] and _netloc(str(urls[0])):
            names[_netloc(str(urls[0]))] = str(gateway["id"])
    status = (doc.get("nginx") or {}).get("status_url")
    proxies = [str(p["name"]) for p in processes if p.get("tier") == "nginx" and p.get("name")]
    if status and _netloc(str(status)) and len(proxies) == 1:
        names[_netloc(str(status))] = proxies[0]
    host_name = next((str(p["name"]) for p in processes if p.get("name") == NODE_EXPORTER), None)
    return names, host_name


def read_document(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise EndpointsError(f"{path}: cannot read: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise EndpointsError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from None
    if not isinstance(data, dict) or "postgres" not in data:
        raise EndpointsError(f"{path}: not a `local up --json` document (no postgres key)")
    return data


def read_secrets(doc: Mapping[str, Any], path: Path | None = None) -> dict[str, str]:
    """The run's secrets: ``path``, else the document's ``secrets_file``; {} when neither
    can be read (the probes then say which part refused them)."""
    where = path or (Path(doc["secrets_file"]) if doc.get("secrets_file") else None)
    if where is None:
        return {}
    try:
        data = json.loads(where.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def from_document(path: Path, spec: PhaseSpec | None = None) -> Endpoints:
    """``--endpoints FILE``: a `local up --json` document and the secrets file it names."""
    doc = read_document(path)
    return from_summary(doc, read_secrets(doc), spec)


def from_local_state(state_dir: Path, spec: PhaseSpec | None = None) -> Endpoints:
    """``--local``: the running `local up` of a stack, from its state folder."""
    state = state_dir / "state.json"
    try:
        data = json.loads(state.read_text())
    except FileNotFoundError:
        raise EndpointsError(
            f"no running local phase in {state_dir} (no state.json): start one with "
            "`sikka-scaling local up <stack>` or give --endpoints FILE"
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise EndpointsError(f"{state}: unreadable: {error}") from None
    summary = data.get("summary") or {}
    if not data.get("complete") or not summary:
        raise EndpointsError(f"{state_dir}: the local phase is not (completely) up")
    return from_summary(summary, read_secrets(summary, Path(data["secrets_file"])), spec)


def with_overrides(base: Endpoints, **given: Any) -> Endpoints:
    """Single-part flags replace that part's targets (``None``: keep the base's)."""
    return replace(base, **{k: v for k, v in given.items() if v is not None})


# The parts a check cannot measure from a stack's outputs, with what to give instead.
POOLER_PASSWORD_NOTE = (
    "the PgBouncer console's admin password is not a stack output: set "
    "PGBOUNCER_ADMIN_PASSWORD to measure the pooler"
)


def _output(outputs: Mapping[str, Any], path: str) -> Any:
    return _lookup(outputs, path, "stack outputs")


def _output_hostports(values: Any, path: str) -> list[HostPort]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        raise EndpointsError(f"stack outputs: {path}: expected host:port or a list of them")
    return [parse_hostport(str(v), f"stack outputs: {path}") for v in values]


@dataclass(frozen=True)
class _Credentials:
    user: str | None
    password: str | None = field(repr=False)
    database: str | None


def _uri_credentials(outputs: Mapping[str, Any], key: str) -> _Credentials:
    """User, password and database of a connection URI output. An error names the output,
    never its value: the value holds a password."""
    uri = outputs.get(key)
    if uri is None:
        return _Credentials(None, None, None)
    if not isinstance(uri, str) or "://" not in uri:
        raise EndpointsError(
            f"stack outputs: {key} is not a URI (a secret output is read with "
            "`pulumi stack output --show-secrets`)"
        )
    netloc = urlsplit(uri).netloc
    userinfo, at, _ = netloc.rpartition("@")
    if not at:
        return _Credentials(None, None, None)
    user, _, password = userinfo.partition(":")
    path = urlsplit(uri).path.strip("/").split("/", 1)[0]
    return _Credentials(unquote(user) or None, unquote(password) or None, path or None)


def _private_hosts(endpoints: Endpoints, spec: PhaseSpec) -> frozenset[str]:
    hosts = {hp.host for hp in (*endpoints.postgres, *endpoints.poolers, *endpoints.redis)}
    hosts |= {hp.host for hp in endpoints.sentinels}
    urls = [*(u for g in endpoints.gateways for u in g), *endpoints.nginx]
    hosts |= {urlsplit(u).hostname or "" for u in urls}
    if spec.platform == PlatformKind.KUBERNETES:
        return frozenset(h for h in hosts if h.endswith(f".svc.{CLUSTER_DOMAIN}"))
    # Docker: every name but the ports the stack publishes on the Docker host.
    return frozenset(h for h in hosts if h and h not in ("localhost", "127.0.0.1", "::1"))


def platform_network(spec: PhaseSpec) -> str:
    """The network whose names the stack's outputs use, in words."""
    if spec.platform == PlatformKind.KUBERNETES:
        return f"the Kubernetes cluster's DNS (namespace {spec.namespace!r})"
    return f"the Docker network {spec.docker_network!r}"


def from_stack_outputs(outputs: Mapping[str, Any], spec: PhaseSpec, stack: str) -> Endpoints:
    """Endpoints of a deployed stack, from its Pulumi outputs (`pulumi stack output --json
    --show-secrets`, as __main__.py exports them): pure.

    Postgres is probed through its Services (``postgres.primary``, ``postgres.replicas``) as
    the application's user of ``database_uri``: the superuser's password is not an output.
    Redis's data nodes are outputs in the standalone and cluster modes; in Sentinel mode only
    the sentinels are. ``spec`` is the stack file's phase: it names the platform's network
    and the gateway's processes per replica."""
    phase = outputs.get("phase")
    if phase is not None and phase != spec.phase.value:
        raise EndpointsError(
            f"stack outputs: phase is {phase!r}, but the stack file is of the "
            f"{spec.phase.value} phase: give the stack file the outputs were deployed from"
        )
    postgres: list[HostPort] = []
    for hp in [
        *_output_hostports(_output(outputs, "postgres.primary"), "postgres.primary"),
        *_output_hostports(outputs["postgres"].get("replicas"), "postgres.replicas"),
    ]:
        if hp not in postgres:
            postgres.append(hp)
    poolers = _output_hostports(outputs["postgres"].get("pooler"), "postgres.pooler")
    database = _uri_credentials(outputs, "database_uri")
    redis_map = _output(outputs, "redis")
    mode = redis_map.get("redis_mode")
    notes = [f"endpoints from the outputs of the Pulumi stack {stack!r}"]
    if mode == "standalone":
        redis = _output_hostports(_output(outputs, "redis.redis_endpoint"), "redis.redis_endpoint")
        sentinels: list[HostPort] = []
    elif mode == "cluster":
        redis = _output_hostports(_output(outputs, "redis.node_endpoints"), "redis.node_endpoints")
        sentinels = []
    elif mode == "sentinel":
        redis = []
        sentinels = _output_hostports(
            _output(outputs, "redis.sentinel_endpoints"), "redis.sentinel_endpoints"
        )
        notes.append(
            "Redis in Sentinel mode exports its sentinels, not its data nodes: give --redis "
            "HOST:PORT to measure them"
        )
    else:
        raise EndpointsError(
            f"stack outputs: redis.redis_mode is {mode!r}: expected standalone, sentinel or cluster"
        )
    gateway_map = outputs.get("gateway") or {}
    metrics = _output_hostports(gateway_map.get("metrics_endpoints"), "gateway.metrics_endpoints")
    gateways = [
        tuple(_gateway_metrics(f"http://{hp}/metrics", spec.gateway.processes)) for hp in metrics
    ]
    if not gateways:
        notes.append(
            "the stack exports no gateway /metrics address (Kubernetes: the HPA's pods have "
            "no stable name): give --gateway-metrics URL or --prometheus URL"
        )
    status_url = (outputs.get("nginx") or {}).get("status_url")
    if poolers:
        notes.append(POOLER_PASSWORD_NOTE)
    endpoints = Endpoints(
        stack=stack,
        postgres=tuple(postgres),
        database=database.database or spec.postgres.database,
        postgres_user=database.user or spec.postgres.user,
        postgres_password=database.password,
        poolers=tuple(poolers),
        redis=tuple(redis),
        sentinels=tuple(sentinels),
        redis_password=_uri_credentials(outputs, "redis_uri").password,
        gateways=tuple(gateways),
        nginx=(str(status_url),) if status_url else (),
        # Docker's provider runs the containers on this machine's daemon by default; a
        # cluster's nodes are not this machine.
        host=spec.platform != PlatformKind.KUBERNETES,
    )
    private = _private_hosts(endpoints, spec)
    if private:
        network = platform_network(spec)
        prometheus_url = (outputs.get("monitoring") or {}).get("prometheus_url")
        where = (
            f"the stack's Prometheus answers at {prometheus_url} on that network: reach it "
            "through a published port or a tunnel"
            if prometheus_url
            else "the stack exports no Prometheus address: on Kubernetes, the cluster's own "
            "Prometheus scrapes the phase's PodMonitors"
        )
        notes.append(
            f"the stack's outputs name its parts on {network}: from outside it they are "
            f"unreachable. Run the check inside that network, or give --prometheus URL ({where})"
        )
    return replace(
        endpoints,
        private_hosts=private,
        private_network=platform_network(spec) if private else "",
        notes=tuple(notes),
    )

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
from urllib.parse import urlsplit

from scaling.model import POOLER_ADMIN_USER, SUPERUSER, PhaseSpec


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


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise EndpointsError(f"endpoints document: {path} is missing")
        value = value[part]
    return value


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
    )


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

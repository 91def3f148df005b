"""Redis (Valkey by default) as StatefulSets: standalone, Sentinel or Redis Cluster.

* standalone (launch): one pod plus a ClusterIP Service ``redis``.
* sentinel (growth): ``1 + replicas`` data pods and ``sentinels`` Sentinel pods. Every node
  is addressed by its stable pod DNS name (``redis-0.redis-headless.<ns>.svc.cluster.local``);
  at start a data pod asks the Sentinels who the master is (``redis-0`` on first boot).
* cluster (scale): ``masters * (1 + replicas_per_master)`` nodes announcing their pod DNS
  names (``cluster-announce-hostname`` + ``cluster-preferred-endpoint-type hostname``), and an
  idempotent Job that runs ``--cluster create`` only while the cluster is not yet formed.

Configuration text comes from :mod:`scaling.render.redis` (shared with Docker). No password
sits in a ConfigMap: each container writes it from ``REDIS_PASSWORD`` (a Secret) into a file
on an in-memory emptyDir that redis.conf ``include``s (Sentinel: appended to its writable copy).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.gateway_env import redis_client_env
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

from .manifests import Manifest, labels, obj, pod_fqdn, selector_labels, service_fqdn
from .policy import disruption_budget
from .secrets import REDIS_SECRET, placeholder, secret_key_ref, secret_manifest
from .security import (
    REDIS_UID,
    container_security_context,
    empty_dir,
    pod_spec,
    resources,
)

BUS_PORT = REDIS_PORT + 10000

NAME = "redis"
HEADLESS = "redis-headless"
SENTINEL_NAME = "redis-sentinel"
SENTINEL_HEADLESS = "redis-sentinel-headless"
CONFIG_NAME = "redis-config"
JOB_NAME = "redis-cluster-create"
PASSWORD_KEY = "password"

CONF_DIR = "/etc/redis"
RUN_DIR = "/run/redis"
SENTINEL_RUN_DIR = "/run/sentinel"
DATA_DIR = "/data"
# Stand-in for the current master in the Sentinel template; the start script substitutes it.
MASTER_TOKEN = "__MASTER_HOST__"


def data_pods(spec: PhaseSpec) -> int:
    redis = spec.redis
    return {"standalone": 1, "sentinel": 1 + redis.replicas, "cluster": redis.cluster_nodes}[
        redis.mode
    ]


def node_host(spec: PhaseSpec, index: int) -> str:
    return pod_fqdn(f"{NAME}-{index}", HEADLESS, spec.kubernetes.namespace)


def sentinel_host(spec: PhaseSpec, index: int) -> str:
    return pod_fqdn(f"{SENTINEL_NAME}-{index}", SENTINEL_HEADLESS, spec.kubernetes.namespace)


def client_env(spec: PhaseSpec) -> list[dict[str, Any]]:
    """How a gateway finds Redis (the variables gateway/config.py reads), password aside."""
    redis = spec.redis
    if redis.mode == "cluster":
        nodes = [Endpoint(node_host(spec, i), REDIS_PORT) for i in range(data_pods(spec))]
    else:
        nodes = [Endpoint(service_fqdn(NAME, spec.kubernetes.namespace), REDIS_PORT)]
    sentinels = [Endpoint(sentinel_host(spec, i), SENTINEL_PORT) for i in range(redis.sentinels)]
    values = redis_client_env(spec, nodes=nodes, sentinels=sentinels)
    return [{"name": key, "value": value} for key, value in values.items()]


def password_env() -> dict[str, Any]:
    return {"name": "REDIS_PASSWORD", "valueFrom": secret_key_ref(REDIS_SECRET, PASSWORD_KEY)}


# --- container start scripts -------------------------------------------------------------

# Escapes the password for a double-quoted redis.conf string exactly as
# scaling.render.redis.render_redis_secrets does.


def _ask_sentinels(cli: str, hosts: list[str], master_name: str, fallback: str) -> str:
    """Shell that sets $master to the master Sentinel reports, or to the fallback."""
    return f"""\
master=""
for host in {" ".join(hosts)}; do
  [ "$host" = "${{POD_FQDN:-}}" ] && [ "${{SKIP_SELF:-0}}" = 1 ] && continue
  reply=$(timeout 5 {cli} -h "$host" -p {SENTINEL_PORT} --raw \\
    sentinel get-master-addr-by-name {master_name} 2>/dev/null | head -n 1) || reply=""
  case "$reply" in ""|*[!A-Za-z0-9.-]*) continue ;; esac
  master="$reply"
  break
done
[ -n "$master" ] || master={fallback}
"""


def refresh_nodes_conf(data_dir: str = DATA_DIR) -> str:
    """Shell that rewrites each peer's IP in nodes.conf from its stable hostname. Pod IPs
    change on restart; a cluster whose pods all restarted at once finds itself again."""
    conf = f"{data_dir}/nodes.conf"
    return f"""\
if [ -s {conf} ] && command -v getent >/dev/null 2>&1; then
  : > {conf}.new
  while read -r id addr rest; do
    case "$addr" in
      *:*@*,*)
        host=${{addr#*,}}
        host=${{host%%,*}}
        ip=$(getent hosts "$host" | head -n 1 | cut -d ' ' -f 1) || ip=""
        [ -z "$ip" ] || addr="$ip:${{addr#*:}}"
        ;;
    esac
    printf '%s %s %s\\n' "$id" "$addr" "$rest" >> {conf}.new
  done < {conf}
  mv {conf}.new {conf}
fi
"""


def data_start_script(spec: PhaseSpec) -> str:
    server, cli = spec.redis.binaries
    lines = [
        "set -eu",
        "umask 077",
        f"{SECRETS_FILE_SH} > {RUN_DIR}/secrets.conf",
        'export REDISCLI_AUTH="$REDIS_PASSWORD"',
    ]
    script = "\n".join(lines) + "\n"
    if spec.redis.mode == "cluster":
        script += refresh_nodes_conf()
    if spec.redis.mode == "sentinel":
        hosts = [sentinel_host(spec, i) for i in range(spec.redis.sentinels)]
        script += _ask_sentinels(cli, hosts, spec.redis.master_name, node_host(spec, 0))
        script += f'[ "$master" = "$POD_FQDN" ] || set -- "$@" --replicaof "$master" {REDIS_PORT}\n'
    script += f'exec {server} {CONF_DIR}/redis.conf "$@"\n'
    return script


def sentinel_start_script(spec: PhaseSpec) -> str:
    server, cli = spec.redis.binaries
    hosts = [sentinel_host(spec, i) for i in range(spec.redis.sentinels)]
    conf = f"{SENTINEL_RUN_DIR}/sentinel.conf"
    return (
        "set -eu\numask 077\n"
        + ESCAPE_PASSWORD_SH
        + '\nexport REDISCLI_AUTH="$REDIS_PASSWORD"\nSKIP_SELF=1\n'
        + _ask_sentinels(cli, hosts, spec.redis.master_name, node_host(spec, 0))
        # Sentinel refuses a monitor target it cannot resolve: wait for the pod's DNS record.
        + "if command -v getent >/dev/null 2>&1; then\n"
        + '  until getent hosts "$master" >/dev/null 2>&1; do sleep 2; done\nfi\n'
        + f'sed "s/{MASTER_TOKEN}/$master/" {CONF_DIR}/sentinel.conf > {conf}\n'
        + f"{sentinel_auth_sh(spec)} >> {conf}\n"
        + f'exec {server} {conf} --sentinel "$@"\n'
    )


def cluster_create_script(spec: PhaseSpec) -> str:
    hosts = [node_host(spec, i) for i in range(data_pods(spec))]
    return render_cluster_create_script(spec, hosts, REDIS_PORT)


# --- objects -----------------------------------------------------------------------------


def config_files(spec: PhaseSpec) -> dict[str, str]:
    files = {
        "redis.conf": render_redis_conf(
            spec,
            RedisLayout(port=REDIS_PORT, data_dir=DATA_DIR, secrets_file=f"{RUN_DIR}/secrets.conf"),
        )
    }
    if spec.redis.mode == "sentinel":
        files["sentinel.conf"] = render_sentinel_conf(
            spec,
            SentinelLayout(port=SENTINEL_PORT, data_dir=SENTINEL_RUN_DIR),
            Endpoint(MASTER_TOKEN, REDIS_PORT),
        )
    return files


def _checksum(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()


def _fqdn_env(headless: str, namespace: str) -> list[dict[str, Any]]:
    # $(POD_NAME) expands because POD_NAME is defined first (dependent environment variables).
    return [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_FQDN", "value": pod_fqdn("$(POD_NAME)", headless, namespace)},
    ]


def _exec_probe(command: str, **timing: int) -> dict[str, Any]:
    return {"exec": {"command": ["sh", "-c", command]}, "timeoutSeconds": 5, **timing}


def _ping(cli: str, port: int) -> str:
    return f'REDISCLI_AUTH="$REDIS_PASSWORD" {cli} -p {port} ping | grep -q PONG'


def node_resources(spec: PhaseSpec) -> dict[str, Any]:
    memory = spec.redis.memory_per_node_mb
    # maxmemory + fragmentation/buffers requested; the limit leaves room for the fork of an
    # AOF rewrite, whose copy-on-write pages can approach the dataset's size.
    small = memory <= 1024
    return resources(
        250 if small else 500,
        math.ceil(memory * 1.25) + 64,
        1000 if small else 2000,
        2 * memory + 64,
    )


def volume_size_gi(spec: PhaseSpec) -> int:
    # Room for the AOF (rewritten at 2x growth) next to an RDB preamble.
    return max(1, math.ceil(3 * spec.redis.memory_per_node_mb / 1024))


def _volume_claim(spec: PhaseSpec) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": f"{volume_size_gi(spec)}Gi"}},
    }
    if spec.kubernetes.storage_class:
        claim["storageClassName"] = spec.kubernetes.storage_class
    return {"metadata": {"name": "data"}, "spec": claim}


def _headless(spec: PhaseSpec, name: str, target: str, ports: list[dict[str, Any]]) -> Manifest:
    return obj(
        "redis",
        "v1",
        "Service",
        name,
        spec.kubernetes.namespace,
        labels(spec, target, "redis"),
        spec={
            "clusterIP": "None",
            # Peers must resolve each other before they are ready (replication, cluster meet).
            "publishNotReadyAddresses": True,
            "selector": selector_labels(target),
            "ports": ports,
        },
    )


def _statefulset(
    spec: PhaseSpec,
    name: str,
    service: str,
    replicas: int,
    template_labels: dict[str, str],
    pod: dict[str, Any],
    checksum: str,
    claims: list[dict[str, Any]],
) -> Manifest:
    body_spec: dict[str, Any] = {
        "serviceName": service,
        "replicas": replicas,
        # Start script discovery (Sentinel) and the cluster Job cope with any start order.
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": selector_labels(name)},
        "template": {
            "metadata": {
                "labels": template_labels,
                "annotations": {"sikka.io/config-sha256": checksum},
            },
            "spec": pod,
        },
    }
    if claims:
        body_spec["volumeClaimTemplates"] = claims
    return obj(
        "redis",
        "apps/v1",
        "StatefulSet",
        name,
        spec.kubernetes.namespace,
        labels(spec, name, "redis"),
        spec=body_spec,
    )


def data_statefulset(spec: PhaseSpec, checksum: str) -> Manifest:
    _, cli = spec.redis.binaries
    ns = spec.kubernetes.namespace
    ports = [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}]
    if spec.redis.mode == "cluster":
        ports.append({"name": "cluster-bus", "containerPort": BUS_PORT, "protocol": "TCP"})
    announce = Endpoint("$(POD_FQDN)", REDIS_PORT)
    container = {
        "name": "redis",
        "image": spec.redis.image,
        "command": ["sh", "-c", data_start_script(spec), "redis-start"],
        "args": redis_node_args(spec, announce=announce) if spec.redis.mode != "standalone" else [],
        "env": [*_fqdn_env(HEADLESS, ns), password_env()],
        "ports": ports,
        "readinessProbe": _exec_probe(_ping(cli, REDIS_PORT), periodSeconds=5, failureThreshold=3),
        "livenessProbe": _exec_probe(
            _ping(cli, REDIS_PORT), initialDelaySeconds=20, periodSeconds=10, failureThreshold=6
        ),
        "resources": node_resources(spec),
        "securityContext": container_security_context(REDIS_UID),
        "volumeMounts": [
            {"name": "config", "mountPath": CONF_DIR, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
            {"name": "data", "mountPath": DATA_DIR},
        ],
    }
    if not container["args"]:
        del container["args"]
    volumes = [
        {
            "name": "config",
            "configMap": {
                "name": CONFIG_NAME,
                "items": [{"key": "redis.conf", "path": "redis.conf"}],
            },
        },
        empty_dir("run", size_mi=1, memory=True),
    ]
    pod = pod_spec(
        REDIS_UID,
        [container],
        volumes,
        fs_group=True,
        terminationGracePeriodSeconds=30,
        affinity=_spread_affinity(NAME),
    )
    return _statefulset(
        spec,
        NAME,
        HEADLESS,
        data_pods(spec),
        labels(spec, NAME, "redis"),
        pod,
        checksum,
        [_volume_claim(spec)],
    )


def _spread_affinity(name: str) -> dict[str, Any]:
    # Prefer one node per Redis pod, so a node loss takes out one replica at most.
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": selector_labels(name)},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                }
            ]
        }
    }


def sentinel_statefulset(spec: PhaseSpec, checksum: str) -> Manifest:
    _, cli = spec.redis.binaries
    ns = spec.kubernetes.namespace
    container = {
        "name": "sentinel",
        "image": spec.redis.image,
        "command": ["sh", "-c", sentinel_start_script(spec), "sentinel-start"],
        "args": sentinel_node_args(Endpoint("$(POD_FQDN)", SENTINEL_PORT)),
        "env": [*_fqdn_env(SENTINEL_HEADLESS, ns), password_env()],
        "ports": [{"name": "sentinel", "containerPort": SENTINEL_PORT, "protocol": "TCP"}],
        "readinessProbe": _exec_probe(_ping(cli, SENTINEL_PORT), periodSeconds=5),
        "livenessProbe": _exec_probe(
            _ping(cli, SENTINEL_PORT), initialDelaySeconds=20, periodSeconds=10, failureThreshold=6
        ),
        "resources": resources(50, 64, 200, 128),
        "securityContext": container_security_context(REDIS_UID),
        "volumeMounts": [
            {"name": "config", "mountPath": CONF_DIR, "readOnly": True},
            {"name": "run", "mountPath": SENTINEL_RUN_DIR},
        ],
    }
    volumes = [
        {
            "name": "config",
            "configMap": {
                "name": CONFIG_NAME,
                "items": [{"key": "sentinel.conf", "path": "sentinel.conf"}],
            },
        },
        # Sentinel rewrites its own file (and it holds auth-pass): a writable in-memory dir.
        empty_dir("run", size_mi=4, memory=True),
    ]
    pod = pod_spec(
        REDIS_UID,
        [container],
        volumes,
        terminationGracePeriodSeconds=10,
        affinity=_spread_affinity(SENTINEL_NAME),
    )
    return _statefulset(
        spec,
        SENTINEL_NAME,
        SENTINEL_HEADLESS,
        spec.redis.sentinels,
        labels(spec, SENTINEL_NAME, "redis"),
        pod,
        checksum,
        [],
    )


def cluster_create_job(spec: PhaseSpec) -> Manifest:
    container = {
        "name": "cluster-create",
        "image": spec.redis.image,
        "command": ["sh", "-c", cluster_create_script(spec)],
        "env": [password_env()],
        "resources": resources(50, 64, 200, 128),
        "securityContext": container_security_context(REDIS_UID),
    }
    pod = pod_spec(REDIS_UID, [container], [], restartPolicy="OnFailure")
    return obj(
        "redis",
        "batch/v1",
        "Job",
        JOB_NAME,
        spec.kubernetes.namespace,
        labels(spec, JOB_NAME, "redis"),
        spec={
            "backoffLimit": 6,
            "activeDeadlineSeconds": 1800,
            "template": {"metadata": {"labels": labels(spec, JOB_NAME, "redis")}, "spec": pod},
        },
    )


def redis_manifests(spec: PhaseSpec) -> list[Manifest]:
    ns = spec.kubernetes.namespace
    mode = spec.redis.mode
    files = config_files(spec)
    checksum = _checksum(files)
    data_ports = [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis", "protocol": "TCP"}]
    if mode == "cluster":
        data_ports.append(
            {
                "name": "cluster-bus",
                "port": BUS_PORT,
                "targetPort": "cluster-bus",
                "protocol": "TCP",
            }
        )
    manifests = [
        secret_manifest(spec, "redis", REDIS_SECRET, {PASSWORD_KEY: placeholder("redis-password")}),
        obj(
            "redis",
            "v1",
            "ConfigMap",
            CONFIG_NAME,
            ns,
            labels(spec, CONFIG_NAME, "redis"),
            data=files,
        ),
        _headless(spec, HEADLESS, NAME, data_ports),
    ]
    if mode == "standalone":
        manifests.append(
            obj(
                "redis",
                "v1",
                "Service",
                NAME,
                ns,
                labels(spec, NAME, "redis"),
                spec={"type": "ClusterIP", "selector": selector_labels(NAME), "ports": data_ports},
            )
        )
    manifests.append(data_statefulset(spec, checksum))
    if mode == "sentinel":
        manifests.append(
            _headless(
                spec,
                SENTINEL_HEADLESS,
                SENTINEL_NAME,
                [
                    {
                        "name": "sentinel",
                        "port": SENTINEL_PORT,
                        "targetPort": "sentinel",
                        "protocol": "TCP",
                    }
                ],
            )
        )
        manifests.append(sentinel_statefulset(spec, checksum))
        manifests += [
            disruption_budget(spec, "redis", NAME),
            disruption_budget(spec, "redis", SENTINEL_NAME),
        ]
    if mode == "cluster":
        manifests += [cluster_create_job(spec), disruption_budget(spec, "redis", NAME)]
    return manifests

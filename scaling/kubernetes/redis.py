"""Redis (Valkey by default) as StatefulSets, read off the topology's Redis nodes.

* standalone (launch): the ``redis`` group (one pod) and the topology's ``redis`` Service.
* sentinel (growth): the ``redis`` group and the ``redis-sentinel`` group, each a
  StatefulSet with its headless Service; every node is addressed by its pod DNS name
  (``redis-0.redis-headless.<ns>.svc.cluster.local``), which the topology already wrote into
  the start scripts, the Sentinels' list and the gateways' environment.
* cluster (scale): the ``redis`` group announcing its pod DNS names, and the topology's
  one-shot ``redis-cluster-init`` node as a Job (forms the cluster, later joins added nodes
  and rebalances).
* a transition's cut-over: the topology's guard (``redis-promote``, the master's promotion)
  or key import (``redis-import``, into a Redis Cluster) as a Job that runs once
  (the runtime has the Redis StatefulSet wait for the former).

Every name, script, file, volume size and stop period comes from the topology
(:mod:`scaling.topology.redis`); this module only decides the Kubernetes shape. No password
sits in a ConfigMap: each start script writes it from ``REDIS_PASSWORD`` (a Secret) into an
in-memory emptyDir.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from scaling.model import PhaseSpec
from scaling.promotion import following
from scaling.topology import Node, Topology
from scaling.topology.network import headless_service
from scaling.topology.redis import GROUP, SENTINEL_GROUP

from . import pods
from .manifests import REPLACE_UNREADY, Manifest, labels, obj
from .policy import disruption_budget
from .secrets import REDIS_SECRET, secret_env, secret_manifest, secret_placeholders
from .security import REDIS_UID, container_security_context, pod_spec, resources
from .services import governing_service, tier_services

CONFIG_NAME = "redis-config"


def _checksum(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()


def node_resources(spec: PhaseSpec, node: Node) -> dict[str, Any]:
    """The topology's memory for the node is requested. A data node's limit adds one
    dataset's worth for the fork of an AOF rewrite, whose copy-on-write pages can approach
    the dataset's size; a Sentinel's is its request."""
    if node.memory_mb is None:
        raise ValueError(f"{node.name}: the topology gives it no memory")
    if not node.volumes:
        return resources(50, node.memory_mb, 200, node.memory_mb)
    dataset = spec.redis.memory_per_node_mb
    small = dataset <= 1024
    return resources(
        250 if small else 500, node.memory_mb, 1000 if small else 2000, node.memory_mb + dataset
    )


def _container_name(group: str) -> str:
    # "redis" → "redis", "redis-sentinel" → "sentinel", "redis-cluster-init" → "cluster-init".
    return group.removeprefix(f"{GROUP}-")


def server_statefulset(topology: Topology, group: str) -> Manifest:
    """One group of long-running Redis nodes (the data nodes, or the Sentinels) as a
    StatefulSet governed by ``<group>-headless``."""
    spec = topology.spec
    nodes = pods.statefulset_nodes(topology, group)
    headless = headless_service(group)
    user = pods.uniform(nodes, "user", lambda n: pods.uid(n, REDIS_UID))
    files = pods.uniform(nodes, "files", lambda n: n.files)
    config_mounts, config_volumes = pods.config_volumes(files, CONFIG_NAME)
    tmpfs_mounts, tmpfs_volumes = pods.tmpfs_volumes(
        pods.uniform(nodes, "tmpfs paths", lambda n: n.tmpfs)
    )
    data_mounts, claims = pods.volume_claims(spec, nodes)
    container = {
        "name": _container_name(group),
        "image": pods.uniform(nodes, "image", lambda n: n.image),
        **pods.uniform(nodes, "command", pods.command_fields),
        "env": [
            *pods.statefulset_env(nodes, headless, spec.namespace),
            *pods.uniform(nodes, "secrets", secret_env),
        ],
        "ports": pods.uniform(nodes, "ports", pods.container_ports),
        **pods.uniform(nodes, "health check", lambda n: pods.exec_probes(n.health)),
        "resources": pods.uniform(nodes, "memory", lambda n: node_resources(spec, n)),
        "securityContext": container_security_context(user),
        "volumeMounts": [*config_mounts, *tmpfs_mounts, *data_mounts],
    }
    stop = pods.uniform(nodes, "stop policy", lambda n: n.stop)
    # Kubernetes stops a container with SIGTERM; every Redis node's graceful stop is SIGTERM.
    if stop.signal != "SIGTERM":
        raise ValueError(
            f"group {group}: Kubernetes sends SIGTERM, the topology wants {stop.signal}"
        )
    pod = pod_spec(
        user,
        [container],
        [*config_volumes, *tmpfs_volumes],
        fs_group=bool(claims),
        terminationGracePeriodSeconds=stop.grace_seconds,
        affinity=pods.spread_affinity(group),
    )
    return pods.statefulset(
        spec,
        "redis",
        group,
        headless,
        len(nodes),
        pod,
        # A changed file changes the template, which rolls the pods (a ConfigMap edit alone
        # would not); only the group's own files count.
        {"sikka.io/config-sha256": _checksum({f.render_name: f.content for f in files})},
        claims,
    )


def one_shot_job(topology: Topology, node: Node) -> Manifest:
    """A one-shot node as a Job. The cluster init is retried until it succeeds; its script
    names every node, so a phase that grows changes the Job, which then runs again. A
    cut-over's guard (the key import) runs once: a refusal fails `pulumi up`, and the next
    `pulumi up` replaces the failed Job, which runs it again."""
    spec = topology.spec
    user = pods.uid(node, REDIS_UID)
    guard = node.role == "promoter"
    mounts, volumes = pods.tmpfs_volumes(node.tmpfs)
    container = {
        "name": _container_name(node.group),
        "image": node.image,
        **pods.command_fields(node),
        "env": [*pods.plain_env(node.env), *secret_env(node)],
        "resources": resources(50, 64, 200, 128),
        "securityContext": container_security_context(user),
        **({"volumeMounts": mounts} if mounts else {}),
    }
    pod = pod_spec(user, [container], volumes, restartPolicy="Never" if guard else "OnFailure")
    manifest = obj(
        "redis",
        "batch/v1",
        "Job",
        node.name,
        spec.namespace,
        labels(spec, node.name, "redis"),
        spec={
            "backoffLimit": 0 if guard else 6,
            "activeDeadlineSeconds": 1800,
            "template": {"metadata": {"labels": labels(spec, node.name, "redis")}, "spec": pod},
        },
    )
    if guard:
        manifest.body["metadata"]["annotations"] = dict(REPLACE_UNREADY)
    return manifest


def _while_following(topology: Topology, manifest: Manifest) -> Manifest:
    """A transition's target (sikka:promoteFrom, before the cut-over): no Sentinel runs, as
    a Sentinel would fail over a master that reports itself a replica (of the source). The
    cut-over starts them: their StatefulSet's replicas, nothing else, changes."""
    spec = topology.spec
    if not following(spec.promotion) or manifest.name != SENTINEL_GROUP:
        return manifest
    body = {**manifest.body, "spec": {**manifest.body["spec"], "replicas": 0}}
    return dataclasses.replace(manifest, body=body)


def _groups(topology: Topology) -> list[str]:
    groups: list[str] = []
    for node in topology.tier("redis"):
        if node.group not in groups:
            groups.append(node.group)
    return groups


def redis_manifests(topology: Topology) -> list[Manifest]:
    """The Secret and ConfigMap, the Services, then a StatefulSet per group of servers (data
    nodes first) and a Job per one-shot node; a budget for every group of several pods."""
    spec = topology.spec
    files = pods.config_map_data(topology.tier("redis"))
    servers = [g for g in _groups(topology) if not any(n.one_shot for n in topology.group(g))]
    one_shots = [n for n in topology.tier("redis") if n.one_shot]
    return [
        secret_manifest(spec, "redis", REDIS_SECRET, secret_placeholders(REDIS_SECRET)),
        obj(
            "redis",
            "v1",
            "ConfigMap",
            CONFIG_NAME,
            spec.namespace,
            labels(spec, CONFIG_NAME, "redis"),
            data=files,
        ),
        *(governing_service(topology, pods.statefulset_nodes(topology, g)) for g in servers),
        *tier_services(topology, "redis"),
        *(_while_following(topology, server_statefulset(topology, g)) for g in servers),
        *(one_shot_job(topology, n) for n in one_shots),
        *(disruption_budget(spec, "redis", g) for g in servers if len(topology.group(g)) > 1),
    ]

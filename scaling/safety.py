"""Changes `pulumi up` must refuse because they cannot be applied without losing data.

Pure: :func:`deployed_shape` is what the stack exports about where its data lives (shard
and master counts, namespace, volume claims, whether Patroni picks the PostgreSQL leader and
how many etcd members hold its lock); on the next run :func:`refusals` compares
the new spec with the shape the stack last deployed and names every key whose change would
delete a node that still owns data, or move or recreate a volume, with what to do instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scaling.issues import ConfigIssue
from scaling.topology import Topology
from scaling.topology.postgres import ETCD_SERVICE

# The stack output holding the shape, read back on the next run.
SHAPE_EXPORT = "deployedShape"
MIGRATION_DOC = "README.md, 'Changes that move data'"


def deployed_shape(topology: Topology) -> dict[str, Any]:
    spec = topology.spec
    shape: dict[str, Any] = {
        "platform": spec.platform.value,
        "postgresMode": spec.postgres.mode,
        "redisMode": spec.redis.mode,
    }
    if spec.postgres.mode == "citus":
        shape["postgresShards"] = spec.postgres.shards
    if topology.has_service(ETCD_SERVICE):
        # Patroni leads the members (any of them may be the leader), etcd holds its lock.
        shape["postgresFailover"] = "patroni"
        shape["etcdMembers"] = len(topology.service(ETCD_SERVICE).targets)
    if spec.redis.mode == "cluster":
        shape["redisMasters"] = spec.redis.masters
        shape["redisReplicasPerMaster"] = spec.redis.replicas_per_master
    if spec.platform.value == "kubernetes":
        shape["namespace"] = spec.namespace
        shape["redisStorageGb"] = spec.redis.storage_gb
        # "" for the cluster's default class (an output that is None would not round-trip).
        shape["storageClass"] = spec.kubernetes.storage_class or ""
    return shape


def _issue(key: str, message: str) -> ConfigIssue:
    return ConfigIssue(f"sikka:{key}", message)


def refusals(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[ConfigIssue]:
    """Every change from ``previous`` (None: nothing deployed yet) that would lose data."""
    if not previous:
        return []
    issues: list[ConfigIssue] = []

    def changed(key: str) -> bool:
        return key in previous and previous.get(key) != current.get(key)

    if changed("platform"):
        issues.append(
            _issue(
                "platform",
                f"the stack's data lives on {previous['platform']}; switching to "
                f"{current['platform']} would start empty. Deploy a new stack on "
                f"{current['platform']} and move the data with a transition ({MIGRATION_DOC})",
            )
        )
        return issues  # every other comparison is between different runtimes
    if changed("namespace"):
        issues.append(
            _issue(
                "kubernetes.namespace",
                f"the stack's volumes live in namespace {previous['namespace']!r}; renaming it "
                "would delete that namespace with its PersistentVolumeClaims. Keep "
                f"{previous['namespace']!r} (set it explicitly) or move the data ({MIGRATION_DOC})",
            )
        )
    # A layout change is reported once; counts of the old layout are not compared with it.
    postgres_moved = changed("postgresMode") and "citus" in (
        previous["postgresMode"],
        current["postgresMode"],
    )
    redis_moved = changed("redisMode") and "cluster" in (
        previous["redisMode"],
        current["redisMode"],
    )
    if postgres_moved:
        issues.append(
            _issue(
                "postgres.mode",
                f"{previous['postgresMode']!r} → {current['postgresMode']!r} changes how the data "
                f"is laid out (one cluster vs Citus shards); move it with a transition "
                f"({MIGRATION_DOC})",
            )
        )
    if redis_moved:
        issues.append(
            _issue(
                "redis.mode",
                f"{previous['redisMode']!r} → {current['redisMode']!r}: Redis Cluster keeps "
                "keys in hash slots, the other modes in one keyspace; move them with a transition "
                f"({MIGRATION_DOC})",
            )
        )
    if (
        "postgresShards" in previous
        and current.get("postgresShards", 0) < previous["postgresShards"]
    ):
        issues.append(
            _issue(
                "postgres.shards",
                f"lowering {previous['postgresShards']} → {current.get('postgresShards')} would "
                "delete shard groups that still hold data; drain them first "
                "(SELECT citus_drain_node(...) per worker, then remove it from Citus), then "
                f"lower the count ({MIGRATION_DOC})",
            )
        )
    if previous.get("postgresFailover") == "patroni" and not postgres_moved:
        issues += _patroni_refusals(previous, current)
    if redis_moved:
        return issues
    if "redisMasters" in previous and current.get("redisMasters", 0) < previous["redisMasters"]:
        issues.append(
            _issue(
                "redis.masters",
                f"lowering {previous['redisMasters']} → {current.get('redisMasters')} would delete "
                "masters that own hash slots; move their slots away first (redis-cli --cluster "
                "reshard, then del-node), then lower the count "
                f"({MIGRATION_DOC})",
            )
        )
    if changed("redisReplicasPerMaster"):
        issues.append(
            _issue(
                "redis.replicasPerMaster",
                f"{previous['redisReplicasPerMaster']} → {current.get('redisReplicasPerMaster')} "
                "would give existing nodes other roles (nodes are laid out by ordinal: "
                "master, then its replicas); change it with a transition to a new stack "
                f"({MIGRATION_DOC})",
            )
        )
    for key, setting, why in (
        ("redisStorageGb", "redis.storageGb", "size"),
        ("storageClass", "kubernetes.storageClass", "storage class"),
    ):
        if changed(key):
            issues.append(
                _issue(
                    setting,
                    f"the Redis StatefulSet's volumeClaimTemplates are immutable: its claim "
                    f"{why} cannot change from {previous[key]!r} to {current.get(key)!r} in "
                    "place. Resize the claims themselves (kubectl patch pvc, where the storage "
                    "class allows expansion), orphan the StatefulSet (kubectl delete sts redis "
                    f"--cascade=orphan), then set the new value ({MIGRATION_DOC})",
                )
            )
    return issues


def _patroni_refusals(previous: Mapping[str, Any], current: Mapping[str, Any]) -> list[ConfigIssue]:
    issues = []
    if current.get("postgresFailover") != "patroni":
        key = (
            "postgres.mode" if current["postgresMode"] != "replicated" else "postgres.readReplicas"
        )
        issues.append(
            _issue(
                key,
                "Patroni manages the stack's PostgreSQL and may have made any member the "
                "leader; a single server would start from postgres-0's volume, which may hold "
                "an older copy than the leader's, and the newer writes would be lost. Keep a "
                f"replica, or move the data to a new stack with a transition ({MIGRATION_DOC})",
            )
        )
    elif current.get("etcdMembers") != previous.get("etcdMembers"):
        issues.append(
            _issue(
                "postgres.etcdMembers",
                f"{previous.get('etcdMembers')} → {current.get('etcdMembers')}: etcd's members "
                "settle who belongs to the cluster when it first forms; restarted with another "
                "list they no longer make a majority, and Patroni's leader loses its lock "
                f"and steps down. Keep {previous.get('etcdMembers')}: another count means "
                "changing the running cluster's membership one member at a time (etcdctl "
                f"member add / member remove), which this stack does not do ({MIGRATION_DOC})",
            )
        )
    return issues

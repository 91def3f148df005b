"""A Citus target following a plain source by logical replication, as Kubernetes objects.

A scale stack (``SGShardedCluster``) whose ``sikka:promoteFrom`` names a launch or growth
stack (one ``SGCluster``) cannot be a StackGres standby of it (``replicateFrom`` maps
coordinator and shards one to one onto a sharded source). Its SGShardedCluster is created
as for a fresh phase, and beside it:

* while following (``promoteFrom`` set, no cut-over): the ConfigMap ``postgres-transition``
  with the two scripts of :mod:`scaling.render.logical_transition`, and the Job
  ``postgres-transition-follow``: the source's schema onto the coordinator, a publication on
  the source, a subscription on the coordinator (``copy_data = true``);
* at the cut-over (``sikka:promoteCutover: true``): the same ConfigMap and the Job
  ``postgres-transition-cutover``, which stops the source's writes and refuses (giving them
  back) unless the coordinator applies the source's last LSN in time, then sets the
  sequences, drops the
  subscription and distributes the tables (``postgres.distributionColumns``,
  ``postgres.referenceTables``);
* once ``promoteFrom`` is removed: neither (the SGShardedCluster never changed).

The Jobs log in as each cluster's superuser: the source's from
:data:`scaling.kubernetes.postgres.SOURCE_USERS_SECRET` (the Pulumi layer's copy of the
source cluster's own Secret, as for ``replicateFrom``), the coordinator's from the Secret
StackGres generates for the sharded cluster (named after it). Both reach the servers on
StackGres's direct port (5433): PgBouncer's transaction pooling has no place in a
replication set-up. Their pods carry the ``postgres`` component label, which the source's
NetworkPolicy (``sikka:promoteTo``) admits from the target's namespace, as it admits the
coordinator's pods whose subscription connects to it: the source stack needs nothing new.
"""

from __future__ import annotations

import hashlib
from typing import Any

from scaling.exports import STACKGRES_DIRECT_PORT
from scaling.model import PhaseSpec
from scaling.promotion import token
from scaling.render.logical_transition import cutover_script, follow_script
from scaling.topology.network import service_host

from .manifests import REPLACE_UNREADY, Manifest, labels, obj
from .postgres import CLUSTER_NAME, SOURCE_USERS_SECRET, follows_logically
from .secrets import secret_key_ref
from .security import container_security_context, empty_dir, pod_spec, resources

CONFIG_NAME = "postgres-transition"
FOLLOW_JOB = "postgres-transition-follow"
CUTOVER_JOB = "postgres-transition-cutover"
JOBS = (FOLLOW_JOB, CUTOVER_JOB)
FOLLOW_FILE = "follow.sh"
CUTOVER_FILE = "cutover.sh"
SCRIPTS_DIR = "/opt/sikka-transition"
# The official postgres image's "postgres" user.
POSTGRES_UID = 999
# StackGres's Secret of a cluster bears the cluster's name and holds its superuser's login.
TARGET_USERS_SECRET = CLUSTER_NAME


def scripts(spec: PhaseSpec) -> dict[str, str]:
    return {FOLLOW_FILE: follow_script(), CUTOVER_FILE: cutover_script(spec)}


def _environment(spec: PhaseSpec) -> list[dict[str, Any]]:
    def plain(name: str, value: str) -> dict[str, Any]:
        return {"name": name, "value": value}

    def secret(name: str, source: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": secret_key_ref(source, key)}

    return [
        plain("SOURCE_HOST", token("postgres", "host")),
        plain("SOURCE_PORT", str(STACKGRES_DIRECT_PORT)),
        plain("SOURCE_DATABASE", token("postgres", "database")),
        secret("SOURCE_USER", SOURCE_USERS_SECRET, "superuser-username"),
        secret("SOURCE_PASSWORD", SOURCE_USERS_SECRET, "superuser-password"),
        plain("TARGET_HOST", service_host(spec, CLUSTER_NAME)),
        plain("TARGET_PORT", str(STACKGRES_DIRECT_PORT)),
        plain("TARGET_DATABASE", spec.postgres.database),
        secret("TARGET_USER", TARGET_USERS_SECRET, "superuser-username"),
        secret("TARGET_PASSWORD", TARGET_USERS_SECRET, "superuser-password"),
        plain("WORK_DIR", "/tmp"),
        plain("REQUIRE_CITUS", "1"),
    ]


def config_map(spec: PhaseSpec) -> Manifest:
    return obj(
        "postgres",
        "v1",
        "ConfigMap",
        CONFIG_NAME,
        spec.namespace,
        labels(spec, CONFIG_NAME, "postgres"),
        data=scripts(spec),
    )


def job(spec: PhaseSpec) -> Manifest:
    """The step's Job: following, or the cut-over. Its pod template names the digest of its
    script, so a changed script replaces the Job (which runs it again: it is idempotent)."""
    cutover = spec.promotion is not None and spec.promotion.cutover
    name, script = (CUTOVER_JOB, CUTOVER_FILE) if cutover else (FOLLOW_JOB, FOLLOW_FILE)
    digest = hashlib.sha256(scripts(spec)[script].encode()).hexdigest()
    container = {
        "name": "transition",
        "image": spec.postgres.image,
        "command": ["sh", f"{SCRIPTS_DIR}/{script}"],
        "env": _environment(spec),
        "resources": resources(100, 128, 500, 512),
        "securityContext": container_security_context(POSTGRES_UID),
        "volumeMounts": [
            {"name": "scripts", "mountPath": SCRIPTS_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": "/tmp"},
        ],
    }
    volumes = [
        {"name": "scripts", "configMap": {"name": CONFIG_NAME}},
        # The pgpass file and the schema dump: in memory, never on the node's disk.
        empty_dir("scratch", size_mi=256, memory=True),
    ]
    pod = pod_spec(POSTGRES_UID, [container], volumes, restartPolicy="Never")
    pod_labels = labels(spec, name, "postgres")
    manifest = obj(
        "postgres",
        "batch/v1",
        "Job",
        name,
        spec.namespace,
        pod_labels,
        spec={
            # Following waits for the new cluster to answer (the script's READY_SECONDS);
            # a refused cut-over is not retried by Kubernetes: the next `pulumi up` does.
            "backoffLimit": 0 if cutover else 3,
            "activeDeadlineSeconds": 3600,
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {"sikka.io/script-sha256": digest},
                },
                "spec": pod,
            },
        },
    )
    manifest.body["metadata"]["annotations"] = dict(REPLACE_UNREADY)
    return manifest


def logical_manifests(spec: PhaseSpec) -> list[Manifest]:
    """The ConfigMap and the step's Job while the phase follows its source logically or cuts
    over from it; nothing otherwise."""
    if not follows_logically(spec):
        return []
    return [config_map(spec), job(spec)]

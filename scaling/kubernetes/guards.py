"""The cut-over's PostgreSQL guard on Kubernetes: a Job that stops the source's writes and
waits until the standby has replayed them, before Pulumi removes ``replicateFrom``.

A transition's target SGCluster (``sikka:promoteFrom``) is a StackGres standby of its
source; the cut-over (``sikka:promoteCutover: true``) removes ``spec.replicateFrom`` and the
operator promotes the standby leader. Writes the source acknowledged after the target's
last replayed position would be lost, so the Job ``postgres-promote`` runs first (the
runtime makes the SGCluster depend on it): :func:`scaling.render.cutover.standby_guard_script`
freezes the source, waits (bounded) for the target's replay, and otherwise gives the source
its writes back and fails, which fails `pulumi up` before the SGCluster changes. Redis has
its own guard, the topology's ``redis-promote`` node (a Job here too), which the Redis
StatefulSet waits for.

Both log in as the source's superuser, from the Pulumi layer's copy of the source cluster's
Secret (:data:`scaling.kubernetes.postgres.SOURCE_USERS_SECRET`), which the target's users
are too (``replicateFrom.users``); the pod carries the ``postgres`` component label the
source's NetworkPolicy admits from the target's namespace. A sharded target following a
sharded source (coordinator and shards one to one) has no guard: its writes are stopped by
hand.
"""

from __future__ import annotations

from scaling.exports import STACKGRES_DIRECT_PORT
from scaling.model import PhaseSpec
from scaling.promotion import token
from scaling.render.cutover import standby_guard_script
from scaling.render.endpoints import Endpoint
from scaling.topology.network import on_kubernetes, service_host
from scaling.topology.postgres import PROMOTER

from .manifests import REPLACE_UNREADY, Manifest, labels, obj
from .postgres import CLUSTER_NAME, SOURCE_USERS_SECRET, follows_logically, is_sharded
from .secrets import secret_key_ref
from .security import container_security_context, pod_spec, resources

GUARD_JOB = PROMOTER
# The official postgres image's "postgres" user.
POSTGRES_UID = 999


def standby_guarded(spec: PhaseSpec) -> bool:
    """A Kubernetes cut-over of an SGCluster that followed its source by ``replicateFrom``."""
    promotion = spec.promotion
    return (
        on_kubernetes(spec)
        and promotion is not None
        and promotion.cutover
        and not is_sharded(spec)
        and not follows_logically(spec)
    )


def guard_job(spec: PhaseSpec) -> Manifest:
    script = standby_guard_script(
        (token("postgres", "host"), STACKGRES_DIRECT_PORT),
        Endpoint(service_host(spec, CLUSTER_NAME), STACKGRES_DIRECT_PORT),
    )
    container = {
        "name": "guard",
        "image": spec.postgres.image,
        "command": ["sh", "-c", script],
        "env": [
            {
                "name": "SUPERUSER",
                "valueFrom": secret_key_ref(SOURCE_USERS_SECRET, "superuser-username"),
            },
            {
                "name": "SUPERUSER_PASSWORD",
                "valueFrom": secret_key_ref(SOURCE_USERS_SECRET, "superuser-password"),
            },
        ],
        "resources": resources(50, 64, 200, 128),
        "securityContext": container_security_context(POSTGRES_UID),
    }
    pod = pod_spec(POSTGRES_UID, [container], [], restartPolicy="Never")
    pod_labels = labels(spec, GUARD_JOB, "postgres")
    manifest = obj(
        "postgres",
        "batch/v1",
        "Job",
        GUARD_JOB,
        spec.namespace,
        pod_labels,
        spec={
            # A refusal fails `pulumi up`; the next one replaces the Job and runs it again.
            "backoffLimit": 0,
            "activeDeadlineSeconds": 900,
            "template": {"metadata": {"labels": pod_labels}, "spec": pod},
        },
    )
    manifest.body["metadata"]["annotations"] = dict(REPLACE_UNREADY)
    return manifest


def guard_manifests(spec: PhaseSpec) -> list[Manifest]:
    """The guard Job at a standby's cut-over; nothing otherwise."""
    return [guard_job(spec)] if standby_guarded(spec) else []

"""Registers the pure Kubernetes manifests as typed pulumi-kubernetes resources, one each,
so that `pulumi preview` shows a diff per object."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.transition import SourceStack, filled
from scaling.kubernetes import Manifest, fill_placeholders, placeholders_in
from scaling.kubernetes import operator_release as operator_chart
from scaling.kubernetes.guards import GUARD_JOB as POSTGRES_GUARD
from scaling.kubernetes.logical import CUTOVER_JOB as LOGICAL_CUTOVER_JOB
from scaling.kubernetes.logical import JOBS as TRANSITION_JOBS
from scaling.kubernetes.manifests import labels
from scaling.kubernetes.postgres import SOURCE_USERS_OF, SOURCE_USERS_SECRET
from scaling.model import PhaseSpec
from scaling.render.env import SECRET_VARIABLES
from scaling.topology.redis import GROUP as REDIS_GROUP
from scaling.topology.redis import IMPORTER as REDIS_IMPORTER
from scaling.topology.redis import PROMOTER as REDIS_PROMOTER
from scaling.topology.redis import SENTINEL_GROUP

# Built-in kinds the builder emits → their typed resource classes. Anything else (StackGres
# kinds) is registered as a CustomResource.
TYPED: dict[tuple[str, str], Any] = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "Secret"): k8s.core.v1.Secret,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("apps/v1", "StatefulSet"): k8s.apps.v1.StatefulSet,
    ("batch/v1", "Job"): k8s.batch.v1.Job,
    ("autoscaling/v2", "HorizontalPodAutoscaler"): k8s.autoscaling.v2.HorizontalPodAutoscaler,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
}

# The StackGres clusters: a Citus target's transition Jobs run after theirs.
CLUSTER_KINDS = ("SGCluster", "SGShardedCluster")
# A transition's cut-over guards (Jobs): PostgreSQL's (a standby's, or the logical cut-over),
# then Redis's (the master's promotion, or the key import into a Redis Cluster).
POSTGRES_GUARDS = (POSTGRES_GUARD, LOGICAL_CUTOVER_JOB)
REDIS_GUARDS = (REDIS_PROMOTER, REDIS_IMPORTER)
GUARDS = (*POSTGRES_GUARDS, *REDIS_GUARDS)
# Registered before the rest of their tier (the logical cut-over waits for its cluster).
FIRST_GUARDS = (POSTGRES_GUARD, *REDIS_GUARDS)

# Top-level object fields → the typed classes' keyword arguments.
FIELD_ARGS = {
    "stringData": "string_data",
    "data": "data",
    "spec": "spec",
    "type": "type",
    "metadata": "metadata",
    "immutable": "immutable",
}


def _resource_name(prefix: str, manifest: Manifest) -> str:
    return f"{prefix}-{manifest.kind.lower()}-{manifest.name}"


class KubernetesRuntime:
    """The Kubernetes side of :class:`components.tier.Runtime`: every object of a tier
    becomes its own typed resource, after the namespace (and the operator, if asked)."""

    def __init__(
        self,
        spec: PhaseSpec,
        manifests: list[Manifest],
        secrets: Mapping[str, pulumi.Output[str]],
        source: SourceStack | None = None,
    ) -> None:
        self.spec = spec
        self.manifests = manifests
        self.secrets = secrets
        # A transition's source stack (sikka:promoteFrom): fills the objects' source tokens.
        self.source = source
        by_variable = {SECRET_VARIABLES[name] for name in secrets}
        for manifest in manifests:
            missing = placeholders_in(manifest.body) - by_variable
            if missing:  # a programming error: caught before anything is registered
                raise KeyError(f"{manifest.key}: no secret for {sorted(missing)}")
        self._foundation: list[pulumi.Resource] = []
        # The cut-over's guard Jobs registered so far, by name.
        self._guards: dict[str, pulumi.Resource] = {}

    def register_foundation(self, prefix: str, parent: pulumi.Resource) -> None:
        """The namespace, its default-deny policy and, when asked, the StackGres operator."""
        for manifest in self.manifests:
            if manifest.tier in ("namespace", "operator"):
                self._foundation.append(self._register(prefix, manifest, parent, []))
        chart = operator_chart(self.spec)
        if chart is not None:
            self._foundation.append(
                k8s.helm.v3.Release(
                    f"{prefix}-stackgres-operator",
                    name=chart["name"],
                    chart=chart["chart"],
                    version=chart["version"],
                    namespace=chart["namespace"],
                    create_namespace=chart["create_namespace"],
                    repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart["repository"]),
                    values=chart["values"],
                    opts=pulumi.ResourceOptions(parent=parent, depends_on=list(self._foundation)),
                )
            )

    def register_tier(self, tier: str, prefix: str, parent: pulumi.Resource) -> list[str]:
        registered = []
        depends = list(self._foundation)
        if tier == "postgres" and self._needs_source_users():
            depends.append(self._source_users(prefix, parent))
            registered.append(f"Secret/{SOURCE_USERS_SECRET}")
        data: list[pulumi.Resource] = []
        # A cut-over's guards come first in their tier: what holds the data waits for them.
        ordered = sorted(
            (m for m in self.manifests if m.tier == tier),
            key=lambda m: not (m.kind == "Job" and m.name in FIRST_GUARDS),
        )
        for manifest in ordered:
            after = depends
            if manifest.kind == "Job" and manifest.name in REDIS_GUARDS:
                # Redis's cut-over only once PostgreSQL's succeeded (as on Docker): a
                # refused one leaves both stores with the source.
                after = [*depends, *self._guarded(POSTGRES_GUARDS)]
            if manifest.kind in CLUSTER_KINDS:
                # replicateFrom goes only once the guard saw the standby replay it all.
                after = [*depends, *self._guarded((POSTGRES_GUARD,))]
            if manifest.kind == "StatefulSet" and manifest.name == REDIS_GROUP:
                # The pods roll without --replicaof only once the guard promoted the master.
                after = [*depends, *self._guarded((REDIS_PROMOTER,))]
            if manifest.kind == "StatefulSet" and manifest.name == SENTINEL_GROUP:
                # A transition's target: the Sentinels start once the Redis pods have
                # rolled out without --replicaof (Pulumi waits for a StatefulSet's
                # rollout), never while the master still follows the source.
                after = [*depends, *data] if self.spec.promotion else depends
            if manifest.kind == "Job" and manifest.name in TRANSITION_JOBS:
                # A Citus target's transition step runs once its cluster is declared.
                after = [*depends, *data]
            resource = self._register(prefix, manifest, parent, after)
            if manifest.kind == "Job" and manifest.name in GUARDS:
                self._guards[manifest.name] = resource
            if manifest.kind == "StatefulSet" and manifest.name == REDIS_GROUP:
                data.append(resource)
            if manifest.kind in CLUSTER_KINDS:
                data.append(resource)
            registered.append(f"{manifest.kind}/{manifest.name}")
        return registered

    def _guarded(self, names: tuple[str, ...]) -> list[pulumi.Resource]:
        return [self._guards[name] for name in names if name in self._guards]

    def _needs_source_users(self) -> bool:
        """The source cluster's users are read by a standby (replicateFrom) or by a Citus
        target's transition Jobs (logical replication)."""
        return any(
            "replicateFrom" in m.body.get("spec", {})
            for m in self.manifests
            if m.kind in CLUSTER_KINDS
        ) or any(
            m.kind == "Job" and m.name in (*TRANSITION_JOBS, POSTGRES_GUARD) for m in self.manifests
        )

    def _source_users(self, prefix: str, parent: pulumi.Resource) -> pulumi.Resource:
        """The source cluster's users (StackGres keeps them in the cluster's own Secret, in
        the source's namespace) copied into this namespace, where replicateFrom.users reads
        them: read from the cluster, never through a file or the program's output."""
        assert self.source is not None
        namespace = self.source.outputs.apply(lambda s: s["kubernetes"]["namespace"])
        original = k8s.core.v1.Secret.get(
            f"{prefix}-source-users-read",
            pulumi.Output.concat(namespace, "/", SOURCE_USERS_OF),
            opts=pulumi.ResourceOptions(parent=parent),
        )
        data: pulumi.Output[Any] = pulumi.Output.secret(original.data)
        return k8s.core.v1.Secret(
            f"{prefix}-secret-{SOURCE_USERS_SECRET}",
            metadata={
                "name": SOURCE_USERS_SECRET,
                "namespace": self.spec.namespace,
                "labels": labels(self.spec, SOURCE_USERS_SECRET, "postgres"),
            },
            type="Opaque",
            data=data,
            opts=pulumi.ResourceOptions(parent=parent, depends_on=list(self._foundation)),
        )

    def _register(
        self,
        prefix: str,
        manifest: Manifest,
        parent: pulumi.Resource,
        depends_on: list[pulumi.Resource],
    ) -> pulumi.Resource:
        opts = pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on))
        if manifest.kind == "Job" and manifest.name in (*TRANSITION_JOBS, *GUARDS):
            # Following waits for a new cluster to answer and copies the rows' schema; the
            # cut-over waits (bounded) for the last LSN, the key import for the cluster to
            # form and for its copy: longer than Pulumi's 10 minutes.
            opts = pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(
                    custom_timeouts=pulumi.CustomTimeouts(create="60m", update="60m")
                ),
            )
        if manifest.holds_data:
            # The Namespace, the StackGres clusters and claim-bearing StatefulSets: never
            # deleted or replaced by a routine `pulumi up`, and left in place if the stack
            # forgets them.
            opts = pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(protect=self.spec.protect_data, retain_on_delete=True),
            )
        body = self._with_secrets(manifest.body)
        # A transition's target: the source's addresses, from its stack outputs.
        body = {key: filled(self.source, value, manifest.key) for key, value in body.items()}
        name = _resource_name(prefix, manifest)
        typed = TYPED.get((manifest.api_version, manifest.kind))
        if manifest.kind == "SGScript":
            body = self._versioned_scripts(name, body, parent)
        if typed is None:
            fields = {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}
            return k8s.apiextensions.CustomResource(
                name, api_version=manifest.api_version, kind=manifest.kind, opts=opts, **fields
            )
        kwargs = {
            FIELD_ARGS[key]: value
            for key, value in body.items()
            if key not in ("apiVersion", "kind")
        }
        return typed(name, opts=opts, **kwargs)

    def _versioned_scripts(
        self, name: str, body: dict[str, Any], parent: pulumi.Resource
    ) -> dict[str, Any]:
        """StackGres runs a script entry again only when its ``version`` changes, and the
        entries that read a Secret (the application role and its password) must run again
        when the password is rotated, or when their SQL changes (e.g. the role's attributes).
        Their version is a random number that pulumi-random draws anew whenever the password
        (a secret keeper) or the digest of the SQL they read (placeholders, not values)
        changes: it follows both without revealing anything about the password."""
        version = random.RandomInteger(
            f"{name}-version",
            min=1,
            max=2**31 - 1,
            keepers={
                "postgres-password": self.secrets["postgres-password"],
                "sql-sha256": self._script_digest(body),
            },
            opts=pulumi.ResourceOptions(parent=parent),
        )
        scripts = [
            {**entry, "version": version.result} if "scriptFrom" in entry else entry
            for entry in body["spec"]["scripts"]
        ]
        return {**body, "spec": {**body["spec"], "scripts": scripts}}

    def _script_digest(self, body: dict[str, Any]) -> str:
        """SHA-256 of the SQL the script's ``scriptFrom`` entries read from the builder's
        Secrets, as the builder wrote it (``${VARIABLE}`` placeholders, no value)."""
        templates = {
            (m.name, key): text
            for m in self.manifests
            if m.kind == "Secret"
            for key, text in (m.body.get("stringData") or {}).items()
        }
        digest = hashlib.sha256()
        for entry in body["spec"]["scripts"]:
            ref = entry.get("scriptFrom", {}).get("secretKeyRef")
            if ref is not None:
                digest.update(templates[(ref["name"], ref["key"])].encode())
        return digest.hexdigest()

    def _with_secrets(self, body: dict[str, Any]) -> dict[str, Any]:
        """A Secret's `${VAR}` placeholders become the secret Outputs (still secret)."""
        variables = placeholders_in(body)
        if not variables:
            return body
        by_variable = {SECRET_VARIABLES[name]: value for name, value in self.secrets.items()}
        values = pulumi.Output.all(**{v: by_variable[v] for v in variables})
        filled = values.apply(lambda vals: fill_placeholders(body, vals)["stringData"])
        return {**body, "stringData": pulumi.Output.secret(filled)}

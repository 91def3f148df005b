"""What a transition does, decided from the two stacks alone (pure: no I/O).

* :func:`check_direction` refuses a transition that skips a phase, goes backwards or stays in
  the same phase, unless forced;
* :func:`steps` lists the named steps in order, the cut-over marked: before it a failure is
  rolled back (the target torn down, the source serving); from it on, only forward;
* :func:`schema_requirements` says what a sharded (Citus) target asks of the schema;
* :func:`pulumi_commands` is the same sequence on Docker and Kubernetes, as stack config
  (``sikka:promoteFrom``, then ``sikka:promoteCutover: true``) and two ``pulumi up`` runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model import Phase, PhaseSpec

PHASES = tuple(Phase)
# The step whose start is the point of no return: from it on a transition only goes forward.
CUTOVER = "promote-target"
LOCAL = "local"


class TransitionRefused(ValueError):
    """The transition is not done as asked: it skips a phase or goes backwards without
    --force, names a stack that cannot be read, or is not possible on this platform."""


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    cutover: bool = False  # this step is the cut-over (the point of no return)


def check_direction(source: Phase | str, target: Phase | str, force: bool = False) -> list[str]:
    """Nothing (or, with ``force``, the warning) for a move to the very next phase; raises
    :class:`TransitionRefused` naming both phases for any other move without ``force``."""
    src, dst = Phase(source), Phase(target)
    gap = PHASES.index(dst) - PHASES.index(src)
    if gap == 1:
        return []
    if gap > 1:
        skipped = ", ".join(p.value for p in PHASES[PHASES.index(src) + 1 : PHASES.index(dst)])
        problem = f"{src.value} → {dst.value} skips {skipped}"
    elif gap == 0:
        problem = f"{src.value} → {dst.value} stays in the same phase"
    else:
        problem = f"{src.value} → {dst.value} goes backwards"
    if not force:
        raise TransitionRefused(f"{problem}; --force to do it anyway")
    return [f"{problem}: done anyway (--force)"]


def previous_phase(phase: Phase | str) -> Phase | None:
    index = PHASES.index(Phase(phase))
    return PHASES[index - 1] if index > 0 else None


def _postgres(spec: PhaseSpec) -> str:
    pg = spec.postgres
    if pg.mode == "citus":
        return f"Citus ({pg.shards} shards)"
    if pg.mode == "replicated":
        return f"Patroni primary + {pg.read_replicas} replica(s)"
    return "one PostgreSQL server"


def _redis(spec: PhaseSpec) -> str:
    r = spec.redis
    if r.mode == "cluster":
        return f"Redis Cluster ({r.masters} masters)"
    if r.mode == "sentinel":
        return f"Redis master + {r.replicas} replica(s) under Sentinel"
    return "one Redis server"


def _start_target(source: PhaseSpec, target: PhaseSpec) -> str:
    """Locally (the processes of `local up`)."""
    if target.postgres.mode == "citus":
        pg = (
            "PostgreSQL: the local run stands Citus in with a Patroni cluster "
            "(scaling/local/topology.py), which starts as a standby cluster of the source; on "
            "Kubernetes rows move into the Citus coordinator by logical replication (schema "
            "requirements below)"
        )
    elif target.postgres.mode == "replicated":
        pg = (
            "PostgreSQL: the target Patroni cluster starts as a standby cluster of the source "
            "(Patroni standby_cluster, basebackup from the source's read-write door)"
        )
    else:
        pg = (
            "PostgreSQL: the target server starts as a streaming standby of the source "
            "(basebackup from the source's read-write door; a run of it retired by a move "
            "to the source starts again so, its Nginx kept, its retired data set aside)"
        )
    if target.redis.mode == "cluster":
        rd = (
            "Redis: the cluster starts empty; the keys are copied into it (DUMP / RESTORE "
            "to the master owning each key's slot)"
        )
    else:
        rd = "Redis: the target master runs REPLICAOF the source master"
    return (
        f"start the {target.phase.value} phase ({_postgres(target)}, {_redis(target)}) beside "
        f"the {source.phase.value} phase as a replica of it. {pg}. {rd}"
    )


def local_steps(source: PhaseSpec, target: PhaseSpec) -> list[Step]:
    src, dst = source.phase.value, target.phase.value
    redis_sync = (
        "the keys copied again under CLIENT PAUSE WRITE"
        if target.redis.mode == "cluster"
        else "Redis replica offsets equal"
    )
    promote = "pg_promote()" if target.postgres.mode == "single" else "remove standby_cluster"
    return [
        Step(
            "validate-target",
            f"load and validate the {dst} stack file, render its configs and environment "
            "into the target's state folder (rendered/)",
        ),
        Step(
            "check-source",
            f"run the checker on the running {src} phase: every part reachable, its verdict "
            "and recommendation",
        ),
        Step(
            "prepare-source",
            f"give the {src} phase what replication needs (replication role and hba line, "
            "created over loopback with its own secrets; reload)",
        ),
        Step("start-target", _start_target(source, target)),
        Step(
            "catch-up",
            "wait until the target has caught up with the source (lag in bytes and seconds, "
            "Redis offsets), measured",
        ),
        Step(
            "freeze-source",
            f"stop writes on the {src} phase: its Patroni replicas stopped first (none can "
            "take over), then default_transaction_read_only on and the application's sessions "
            "ended, Redis CLIENT PAUSE WRITE (write downtime starts)",
        ),
        Step(
            "final-sync",
            f"the target has every acknowledged write: it replayed the source's last LSN; "
            f"{redis_sync}",
        ),
        Step(
            CUTOVER,
            f"promote the target ({promote}; REPLICAOF NO ONE): THE CUT-OVER — "
            "from here on the transition only goes forward",
            cutover=True,
        ),
        Step(
            "switch-front-door",
            f"point the {src} phase's Nginx upstream at the {dst} gateways (nginx -t, graceful "
            "reload); the old gateways drain (close 1001), clients reconnect through the same "
            "URL",
        ),
        Step(
            "validate-target-live",
            f"run the checker on the {dst} phase: every part reachable, a write through its "
            "database front door and to its Redis master succeeds",
        ),
        Step(
            "retire-source",
            f"stop the {src} phase's processes, kept intact for a fallback, except its Nginx "
            "(still the clients' front door); --retire removes their data",
        ),
    ]


def logical(source: PhaseSpec, target: PhaseSpec) -> bool:
    """Whether the pair moves its rows by logical replication into a Citus coordinator
    (Kubernetes: a plain source, a Citus target; scaling.kubernetes.logical)."""
    return (
        target.platform.value == "kubernetes"
        and target.postgres.mode == "citus"
        and source.postgres.mode != "citus"
    )


def _logical_mechanism(src: str, dst: str) -> dict[str, str]:
    """growth → scale on Kubernetes: the Citus coordinator subscribes to the source."""
    return {
        "prepare-source": (
            f"`pulumi config set sikka:promoteTo {dst}` on {src}, then `pulumi up`: it "
            f"exports where the target subscribes and its NetworkPolicy admits {dst}'s "
            "PostgreSQL pods (its SGCluster is unchanged: StackGres runs wal_level=logical)"
        ),
        "start-target": (
            f"`pulumi config set sikka:promoteFrom {src}` on {dst}, then `pulumi up`: the "
            "SGShardedCluster starts empty (no replicateFrom) and the Job "
            "postgres-transition-follow publishes the source's tables (FOR ALL TABLES; it "
            "refuses a table without a primary key or replica identity first), restores the "
            "source's schema on the coordinator (pg_dump --schema-only, local tables) and "
            "subscribes the coordinator to it (copy_data = true)"
        ),
        "catch-up": (
            "watch the subscription on the coordinator (pg_subscription_rel: every table 'r', "
            f"pg_stat_subscription) and `sikka-scaling check {dst}`"
        ),
        "freeze-source": LOGICAL_FREEZE,
        CUTOVER: (
            f"`pulumi config set sikka:promoteCutover true` on {dst}, then `pulumi up`: the "
            "Job postgres-transition-cutover stops the source's writes, refuses (the source "
            "writable again) unless the coordinator applies its last LSN within 120 s, then "
            "sets every "
            "sequence past the source's value, drops the subscription (and the source's "
            "slot) and distributes the tables named in postgres.distributionColumns with "
            "create_distributed_table_concurrently (writes go on meanwhile) and "
            "postgres.referenceTables with create_reference_table — THE CUT-OVER"
        ),
    }


# A Redis Cluster target (scale) of a single master: what its cut-over adds
# (scaling.render.redis_import).
REDIS_IMPORT = (
    "its Redis Cluster, formed empty, takes the keys: the one-shot redis-import (a Job on "
    "Kubernetes) pauses the source master's writes (CLIENT PAUSE WRITE), copies every key "
    "(DUMP / RESTORE on the master owning its slot), checks the count and has the source's "
    "master refuse writes; it refuses, the source writable again, when the cluster is not "
    "formed, holds keys of its own or refuses the copy"
)


def _standby_mechanism(
    src: str, dst: str, platform: str, *, cluster: bool, guarded_here: bool
) -> dict[str, str]:
    """The target a physical standby of the source (StackGres on Kubernetes, Patroni on
    Docker); ``cluster``: its Redis is a Redis Cluster; ``guarded_here``: the cut-over's
    `pulumi up` stops the source's writes (:func:`guarded`)."""
    if platform == "kubernetes":
        standby = "StackGres spec.replicateFrom on its SGCluster / SGShardedCluster"
        follower = "its Redis master --replicaof the source's, its Sentinels held at 0"
    else:
        standby = (
            "Patroni bootstrap.dcs.standby_cluster over the source's transition network, "
            "found through a stack reference to the source's outputs"
        )
        follower = "its Redis master --replicaof the source's, no Sentinel"
    if cluster:
        follower = "its Redis Cluster formed empty"
    standby = f"{standby}; {follower}"
    return {
        "prepare-source": (
            f"`pulumi config set sikka:promoteTo {dst}` on {src}, then `pulumi up`: it "
            "exports where the target follows it and admits the target's standby"
        ),
        "start-target": (
            f"`pulumi config set sikka:promoteFrom {src}` on {dst}, then `pulumi up`: the "
            f"target starts as a standby of {src} ({standby})"
        ),
        "catch-up": f"watch the replication lag (`sikka-scaling check {dst}`)",
        "freeze-source": (
            DOCKER_FREEZE
            if platform == "docker"
            else KUBERNETES_FREEZE
            if guarded_here
            else _freeze_by_hand(src, dst)
        ),
        CUTOVER: (
            f"`pulumi config set sikka:promoteCutover true` on {dst}, then `pulumi up`: the "
            "standby is promoted (replicateFrom removed; on Docker one-shot guards, then the "
            "Redis master replaced) — THE CUT-OVER"
        ),
    }


def pulumi_steps(source: PhaseSpec, target: PhaseSpec) -> list[Step]:
    """The Docker/Kubernetes transition's steps: the same frame for every pair, the
    mechanism's own words for what it does in between."""
    src, dst = source.stack, target.stack
    mechanism = (
        _logical_mechanism(src, dst)
        if logical(source, target)
        else _standby_mechanism(
            src,
            dst,
            target.platform.value,
            cluster=target.redis.mode == "cluster",
            guarded_here=guarded(source, target),
        )
    )
    if target.redis.mode == "cluster":
        mechanism = {**mechanism, CUTOVER: f"{mechanism[CUTOVER]}; {REDIS_IMPORT}"}
    return [
        Step("validate-target", f"load and validate the {dst} stack file, render its configs"),
        Step("check-source", f"run the checker on the deployed {src} stack"),
        *(
            Step(name, mechanism[name], cutover=name == CUTOVER)
            for name in ("prepare-source", "start-target", "catch-up", "freeze-source", CUTOVER)
        ),
        Step("validate-target-live", f"run the checker on the {dst} stack"),
        Step(
            "retire-source",
            f"scale the {src} stack down once clients use {dst}; its volumes stay protected",
        ),
    ]


def pulumi_limits(source: PhaseSpec, target: PhaseSpec) -> list[str]:
    """What the Pulumi program refuses or does not carry for this pair."""
    found = []
    if source.platform != target.platform:
        found.append(
            f"{source.stack} runs on {source.platform.value} and {target.stack} on "
            f"{target.platform.value}: the program follows a source on the same platform only"
        )
    if target.platform.value == "docker":
        if target.postgres.mode == "single":
            found.append(
                f"{target.stack} runs a single PostgreSQL without Patroni: on Docker it "
                "cannot start as a standby (refused by the program)"
            )
        if source.postgres.mode != "single":
            found.append(
                f"{source.stack} runs Patroni: `sikka:promoteTo` has its members admit the "
                "superuser from its private network (the cut-over's guard comes through its "
                "routers), so they are replaced once, one at a time, at prepare-source (a "
                "leader change); a failover on it during the cut-over makes the guard refuse"
            )
    if target.redis.mode == "cluster" and source.redis.mode != "cluster":
        found.append(
            "a Redis Cluster cannot replicate the source's master: its keys are copied in one "
            "pass at the cut-over, the source's Redis writes paused meanwhile (about 3,500 "
            "keys a second measured through redis-cli on loopback)"
        )
    if logical(source, target):
        found.append(
            "logical replication carries rows, not DDL, sequences or large objects: no schema "
            "change on the source while following; the cut-over Job sets the sequences"
        )
        found.append(
            "tables named in neither postgres.distributionColumns nor postgres.referenceTables "
            "stay local tables on the coordinator"
        )
    return found


def steps(source: PhaseSpec, target: PhaseSpec, platform: str) -> list[Step]:
    """The ordered steps of ``source → target`` on ``platform`` ("local" for the processes
    of `local up`, else "docker" or "kubernetes")."""
    if platform == LOCAL:
        return local_steps(source, target)
    if platform in ("docker", "kubernetes"):
        return pulumi_steps(source, target)
    raise TransitionRefused(f"no transition on platform {platform!r}")


def cutover_index(plan: list[Step]) -> int:
    """Index of the cut-over step (len(plan) when there is none)."""
    return next((i for i, s in enumerate(plan) if s.cutover), len(plan))


def schema_requirements(target: PhaseSpec) -> list[str]:
    """What the target asks of the schema: nothing but for a sharded (Citus) target."""
    if target.postgres.mode != "citus":
        return []
    return [
        "every table has a primary key (or REPLICA IDENTITY FULL): a publication FOR ALL "
        "TABLES makes UPDATE and DELETE fail on a table without a replica identity, so the "
        "follow Job refuses such a source before publishing anything",
        "every table to be distributed is named in postgres.distributionColumns with a "
        "distribution column that is part of its primary key and of each of its unique "
        "constraints (create_distributed_table_concurrently needs the primary key); the "
        "cut-over Job checks this before it changes anything",
        "foreign keys between distributed tables include the distribution column; small "
        "lookup tables go in postgres.referenceTables (create_reference_table); tables named "
        "in neither stay local tables on the coordinator",
        "the roles owning the tables exist on the target (the application's role does)",
        "sequences are not carried by logical replication: the cut-over Job sets them past "
        "the source's values",
        "DDL is not replicated: no schema change on the source while the transition runs",
    ]


# On Docker the cut-over's `pulumi up` stops the source's writes itself (scaling/render/
# cutover.py): its one-shot guards refuse, the source writable again, when the target
# cannot catch up, and the Redis master is replaced only after its guard succeeded.
DOCKER_FREEZE = (
    "done by the cut-over's `pulumi up`: one-shot guards stop writes on the source "
    "(default_transaction_read_only, sessions ended; Redis CLIENT PAUSE WRITE), wait until "
    "the target has replayed its last LSN and reached its Redis offset, then promote it; "
    "when it cannot (60 s, 30 s) the source takes writes again and `pulumi up` fails"
)


# On Kubernetes a standby's cut-over runs guard Jobs first (scaling/kubernetes/guards.py):
# the SGCluster and the Redis StatefulSet change only once they succeeded.
KUBERNETES_FREEZE = (
    "done by the cut-over's `pulumi up`: the Job postgres-promote stops writes on the "
    "source (default_transaction_read_only, sessions ended) and waits until the standby has "
    "replayed its last LSN, then the Job redis-promote pauses the source Redis master's "
    "writes, waits for its offset and promotes the target's master; when they cannot (60 s, "
    "30 s) the source takes writes again and `pulumi up` fails before the SGCluster or the "
    "Redis pods change"
)


def guarded(source: PhaseSpec, target: PhaseSpec) -> bool:
    """Whether the cut-over's `pulumi up` stops the source's writes itself: everywhere but
    a sharded target following a sharded source on Kubernetes (coordinator and shards one
    to one), whose writes are stopped by hand."""
    return not (
        target.platform.value == "kubernetes"
        and target.postgres.mode == "citus"
        and source.postgres.mode == "citus"
    )


def _freeze_by_hand(src: str, dst: str) -> str:
    return (
        f"stop writes on {src} (default_transaction_read_only on, the application's sessions "
        f"ended) and wait until {dst} has replayed its last LSN"
    )


# The logical cut-over's Job stops the source's writes itself (scaling/render/
# logical_transition.py), and gives them back when the coordinator does not catch up.
LOGICAL_FREEZE = (
    "done by the cut-over Job: ALTER SYSTEM SET default_transaction_read_only = on on the "
    "source, pg_reload_conf(), every client session but Patroni's ended (write downtime "
    "starts); reset when the coordinator does not apply the source's last LSN in time"
)


def pulumi_commands(
    source_stack: str,
    target_stack: str,
    force: bool = False,
    *,
    guarded_here: bool = True,
) -> list[str]:
    """The Docker/Kubernetes transition as what a person runs, in order. The cut-over's
    `pulumi up` stops the source's writes itself, unless not ``guarded_here``
    (:func:`guarded`): then the person stops them first."""
    src, dst = source_stack, target_stack
    forced = [f"pulumi config set sikka:promoteForce true --stack {dst}"] if force else []
    by_hand = [] if guarded_here else [_freeze_by_hand(src, dst)]
    return [
        f"pulumi config set sikka:promoteTo {dst} --stack {src}",
        f"pulumi up --stack {src}",
        f"pulumi config set sikka:promoteFrom {src} --stack {dst}",
        *forced,
        f"pulumi up --stack {dst}",
        f"sikka-scaling check {dst}",
        *by_hand,
        f"pulumi config set sikka:promoteCutover true --stack {dst}",
        f"pulumi up --stack {dst}",
        f"sikka-scaling check {dst}",
    ]

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
    if target.postgres.mode == "citus":
        pg = (
            "PostgreSQL: logical replication from the source into the Citus coordinator "
            "(schema requirements below)"
        )
    else:
        pg = (
            "PostgreSQL: the target Patroni cluster starts as a standby cluster of the source "
            "(Patroni standby_cluster, basebackup from the source's read-write door)"
        )
    if target.redis.mode == "cluster":
        rd = "Redis: the cluster starts empty; keys are copied with redis-cli --cluster import"
    else:
        rd = "Redis: the target master runs REPLICAOF the source master"
    return (
        f"start the {target.phase.value} phase ({_postgres(target)}, {_redis(target)}) beside "
        f"the {source.phase.value} phase as a replica of it. {pg}. {rd}"
    )


def local_steps(source: PhaseSpec, target: PhaseSpec) -> list[Step]:
    src, dst = source.phase.value, target.phase.value
    redis_sync = (
        "keys copied again under CLIENT PAUSE WRITE"
        if target.redis.mode == "cluster"
        else "Redis replica offsets equal"
    )
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
            f"stop writes on the {src} phase: default_transaction_read_only on and the "
            "application's sessions ended, Redis CLIENT PAUSE WRITE (write downtime starts)",
        ),
        Step(
            "final-sync",
            f"the target has every acknowledged write: it replayed the source's last LSN; "
            f"{redis_sync}",
        ),
        Step(
            CUTOVER,
            "promote the target (remove standby_cluster; REPLICAOF NO ONE): THE CUT-OVER — "
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


def pulumi_steps(source: PhaseSpec, target: PhaseSpec) -> list[Step]:
    src, dst = source.stack, target.stack
    standby = (
        "StackGres spec.replicateFrom on the SGCluster / SGShardedCluster"
        if target.platform.value == "kubernetes"
        else "its primary bootstraps from the source's primary over a shared network, found "
        "through a stack reference to the source stack's outputs"
    )
    return [
        Step("validate-target", f"load and validate the {dst} stack file, render its configs"),
        Step("check-source", f"run the checker on the deployed {src} stack"),
        Step(
            "start-target",
            f"`pulumi config set sikka:promoteFrom {src}` on {dst}, then `pulumi up`: the "
            f"target starts as a standby of {src} ({standby})",
        ),
        Step("catch-up", f"watch the replication lag (`sikka-scaling check {dst}`)"),
        Step(
            CUTOVER,
            f"`pulumi config set sikka:promoteCutover true` on {dst}, then `pulumi up`: the "
            "standby is promoted (replicateFrom removed) — THE CUT-OVER",
            cutover=True,
        ),
        Step("validate-target-live", f"run the checker on the {dst} stack"),
        Step(
            "retire-source",
            f"scale the {src} stack down once clients use {dst}; its volumes stay protected",
        ),
    ]


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
        "every table has a primary key (or REPLICA IDENTITY FULL): logical replication "
        "publishes UPDATE and DELETE only for tables with a replica identity",
        "every table to be distributed has a distribution column (create_distributed_table) "
        "that is part of its primary key and of each of its unique constraints",
        "foreign keys between distributed tables include the distribution column; small "
        "lookup tables become reference tables (create_reference_table)",
        "sequences are not carried by logical replication: set them past the source's values "
        "at the cut-over",
        "DDL is not replicated: no schema change on the source while the transition runs",
    ]


def pulumi_commands(source_stack: str, target_stack: str) -> list[str]:
    """The Docker/Kubernetes transition as the commands a person runs, in order."""
    return [
        f"pulumi config set sikka:promoteFrom {source_stack} --stack {target_stack}",
        f"pulumi up --stack {target_stack}",
        f"sikka-scaling check {target_stack}",
        f"pulumi config set sikka:promoteCutover true --stack {target_stack}",
        f"pulumi up --stack {target_stack}",
        f"sikka-scaling check {target_stack}",
    ]

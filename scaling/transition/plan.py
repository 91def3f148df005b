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


def pulumi_steps(source: PhaseSpec, target: PhaseSpec) -> list[Step]:
    src, dst = source.stack, target.stack
    if target.platform.value == "kubernetes":
        standby = (
            "StackGres spec.replicateFrom on its SGCluster / SGShardedCluster, its Redis "
            "master --replicaof the source's, its Sentinels held at 0"
        )
    else:
        standby = (
            "Patroni bootstrap.dcs.standby_cluster over the source's transition network, "
            "found through a stack reference to the source's outputs"
        )
    return [
        Step("validate-target", f"load and validate the {dst} stack file, render its configs"),
        Step("check-source", f"run the checker on the deployed {src} stack"),
        Step(
            "prepare-source",
            f"`pulumi config set sikka:promoteTo {dst}` on {src}, then `pulumi up`: it "
            "exports where the target follows it and admits the target's standby",
        ),
        Step(
            "start-target",
            f"`pulumi config set sikka:promoteFrom {src}` on {dst}, then `pulumi up`: the "
            f"target starts as a standby of {src} ({standby})",
        ),
        Step("catch-up", f"watch the replication lag (`sikka-scaling check {dst}`)"),
        Step(
            "freeze-source",
            f"stop writes on {src} (default_transaction_read_only on, the application's "
            f"sessions ended) and wait until {dst} has replayed its last LSN",
        ),
        Step(
            CUTOVER,
            f"`pulumi config set sikka:promoteCutover true` on {dst}, then `pulumi up`: the "
            "standby is promoted (replicateFrom removed; on Docker a one-shot promoter) — THE "
            "CUT-OVER",
            cutover=True,
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
        found.append("Redis is not followed on Docker: the target's Redis starts empty")
    elif target.postgres.mode == "citus" and source.postgres.mode != "citus":
        found.append(
            "a Citus target on Kubernetes follows a sharded source only: rows move from "
            f"{source.stack} by logical replication into the coordinator, which the program "
            "does not render (refused by the program; `--execute --local` does it locally)"
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


def pulumi_commands(source_stack: str, target_stack: str, force: bool = False) -> list[str]:
    """The Docker/Kubernetes transition as what a person runs, in order."""
    src, dst = source_stack, target_stack
    forced = [f"pulumi config set sikka:promoteForce true --stack {dst}"] if force else []
    return [
        f"pulumi config set sikka:promoteTo {dst} --stack {src}",
        f"pulumi up --stack {src}",
        f"pulumi config set sikka:promoteFrom {src} --stack {dst}",
        *forced,
        f"pulumi up --stack {dst}",
        f"sikka-scaling check {dst}",
        f"stop writes on {src} (default_transaction_read_only on, the application's sessions "
        f"ended) and wait until {dst} has replayed its last LSN",
        f"pulumi config set sikka:promoteCutover true --stack {dst}",
        f"pulumi up --stack {dst}",
        f"sikka-scaling check {dst}",
    ]

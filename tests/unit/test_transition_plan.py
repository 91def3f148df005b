"""The transition plan (pure): direction refusals word for word, the steps in order with
the cut-over marked, what a Citus target asks of the schema, the Pulumi commands."""

from __future__ import annotations

import pytest
from support.transition import LOCAL_STEPS

from scaling.model import PhaseSpec
from scaling.stackconfig import load_stack_file
from scaling.stackfiles import stack_path
from scaling.transition import plan
from scaling.transition.plan import TransitionRefused


def spec(stack: str) -> PhaseSpec:
    return load_stack_file(stack_path(stack))


@pytest.mark.parametrize(("source", "target"), [("launch", "growth"), ("growth", "scale")])
def test_the_next_phase_is_allowed(source: str, target: str) -> None:
    assert plan.check_direction(source, target) == []


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("growth", "launch", "growth → launch goes backwards; --force to do it anyway"),
        ("scale", "launch", "scale → launch goes backwards; --force to do it anyway"),
        ("launch", "scale", "launch → scale skips growth; --force to do it anyway"),
        ("growth", "growth", "growth → growth stays in the same phase; --force to do it anyway"),
    ],
)
def test_other_moves_are_refused_naming_both_phases(source: str, target: str, message: str) -> None:
    with pytest.raises(TransitionRefused) as refused:
        plan.check_direction(source, target)
    assert str(refused.value) == message
    # Forced, the same move is done, with the warning said.
    [warning] = plan.check_direction(source, target, force=True)
    assert warning == message.replace("; --force to do it anyway", ": done anyway (--force)")


def test_local_steps_in_order_with_one_cutover() -> None:
    steps = plan.steps(spec("launch"), spec("growth"), "local")
    assert [s.name for s in steps] == LOCAL_STEPS
    assert [s.name for s in steps if s.cutover] == ["promote-target"]
    assert plan.cutover_index(steps) == LOCAL_STEPS.index("promote-target")
    start = steps[3].description
    assert "standby cluster" in start and "REPLICAOF" in start


def test_going_back_to_a_single_postgresql_is_the_same_steps_in_reverse() -> None:
    steps = {s.name: s.description for s in plan.steps(spec("growth"), spec("launch"), "local")}
    assert list(steps) == LOCAL_STEPS
    assert "streaming standby of the source (basebackup" in steps["start-target"]
    assert steps["promote-target"].startswith("promote the target (pg_promote(); REPLICAOF NO ONE)")
    forward = {s.name: s.description for s in plan.steps(spec("launch"), spec("growth"), "local")}
    assert "(remove standby_cluster; REPLICAOF NO ONE)" in forward["promote-target"]


def test_a_cluster_and_citus_target_says_how_data_moves() -> None:
    steps = plan.steps(spec("growth"), spec("scale"), "local")
    start = next(s for s in steps if s.name == "start-target").description
    assert "standby cluster" in start and "logical replication" in start
    assert "the keys are copied into it" in start


def test_schema_requirements_only_for_citus() -> None:
    assert plan.schema_requirements(spec("growth")) == []
    needs = plan.schema_requirements(spec("scale"))
    assert any("primary key" in n for n in needs)
    assert any("distribution column" in n for n in needs)


@pytest.mark.parametrize("platform", ["docker", "kubernetes"])
def test_pulumi_steps_carry_the_two_ups(platform: str) -> None:
    steps = plan.steps(spec("launch"), spec("growth"), platform)
    text = " ".join(s.description for s in steps)
    assert "sikka:promoteFrom launch" in text and "sikka:promoteCutover true" in text
    assert [s.name for s in steps if s.cutover] == ["promote-target"]


def test_unknown_platform_is_refused() -> None:
    with pytest.raises(TransitionRefused, match="no transition on platform 'nomad'"):
        plan.steps(spec("launch"), spec("growth"), "nomad")


def test_pulumi_commands_in_order() -> None:
    # The cut-over's `pulumi up` stops the source's writes itself (guard Jobs on
    # Kubernetes, one-shot containers on Docker).
    assert plan.pulumi_commands("launch", "growth") == [
        "pulumi config set sikka:promoteTo growth --stack launch",
        "pulumi up --stack launch",
        "pulumi config set sikka:promoteFrom launch --stack growth",
        "pulumi up --stack growth",
        "sikka-scaling check growth",
        "pulumi config set sikka:promoteCutover true --stack growth",
        "pulumi up --stack growth",
        "sikka-scaling check growth",
    ]
    forced = plan.pulumi_commands("growth", "launch", force=True)
    assert forced[3] == "pulumi config set sikka:promoteForce true --stack launch"
    # A sharded standby of a sharded source: the person stops the writes first.
    by_hand = plan.pulumi_commands("scale", "scale-eu", guarded_here=False)
    assert by_hand[5] == (
        "stop writes on scale (default_transaction_read_only on, the application's sessions "
        "ended) and wait until scale-eu has replayed its last LSN"
    )
    assert not plan.guarded(spec("scale"), spec("scale"))
    assert plan.guarded(spec("launch"), spec("growth"))
    k8s = spec("launch").model_copy(update={"platform": spec("scale").platform})
    target = spec("growth").model_copy(update={"platform": spec("scale").platform})
    assert plan.guarded(k8s, target)
    steps = {s.name: s.description for s in plan.steps(k8s, target, "kubernetes")}
    assert steps["freeze-source"] == plan.KUBERNETES_FREEZE
    steps = {s.name: s.description for s in plan.steps(spec("launch"), spec("growth"), "docker")}
    assert steps["freeze-source"].startswith("done by the cut-over's `pulumi up`")


def test_pulumi_limits() -> None:
    # The Docker pair launch → growth: PostgreSQL and Redis both followed, cut over safely.
    assert plan.pulumi_limits(spec("launch"), spec("growth")) == []
    patroni_source = plan.pulumi_limits(spec("growth"), spec("growth"))
    assert patroni_source[0].startswith("growth runs Patroni: `sikka:promoteTo` has its members")
    platforms, *_ = plan.pulumi_limits(spec("growth"), spec("scale"))
    assert platforms.startswith("growth runs on docker and scale on kubernetes:")
    # On Kubernetes the pair is rendered: what logical replication leaves out is said.
    growth = spec("growth").model_copy(update={"platform": spec("scale").platform})
    cluster, *limits = plan.pulumi_limits(growth, spec("scale"))
    assert cluster.startswith("a Redis Cluster cannot replicate the source's master")
    assert len(limits) == 2 and "not DDL, sequences" in limits[0]
    assert "stay local tables on the coordinator" in limits[1]
    back = plan.pulumi_limits(spec("growth"), spec("launch"))
    assert "cannot start as a standby" in back[0]


def test_previous_phase() -> None:
    assert plan.previous_phase("growth") == "launch"
    assert plan.previous_phase("launch") is None


def test_growth_to_scale_on_kubernetes_subscribes_the_coordinator() -> None:
    growth = spec("growth").model_copy(update={"platform": spec("scale").platform})
    assert plan.logical(growth, spec("scale")) and not plan.logical(spec("launch"), spec("growth"))
    steps = plan.steps(growth, spec("scale"), "kubernetes")
    by_name = {s.name: s.description for s in steps}
    assert "no replicateFrom" in by_name["start-target"]
    assert "copy_data = true" in by_name["start-target"]
    assert "create_distributed_table_concurrently" in by_name["promote-target"]
    assert [s.name for s in steps if s.cutover] == ["promote-target"]
    # Its Redis Cluster takes the keys at the same cut-over.
    assert by_name["promote-target"].endswith(plan.REDIS_IMPORT)
    assert plan.REDIS_IMPORT not in {d for n, d in by_name.items() if n != "promote-target"}
    launch_growth = plan.steps(spec("launch"), spec("growth"), "docker")
    assert not any(plan.REDIS_IMPORT in s.description for s in launch_growth)
    commands = plan.pulumi_commands(
        "growth", "scale", guarded_here=plan.guarded(growth, spec("scale"))
    )
    assert commands[2] == "pulumi config set sikka:promoteFrom growth --stack scale"
    # No write stop by hand: the cut-over Job stops the writes itself.
    assert not any("default_transaction_read_only" in c for c in commands)
    assert by_name["freeze-source"] == plan.LOGICAL_FREEZE
    assert commands[-3:-1] == [
        "pulumi config set sikka:promoteCutover true --stack scale",
        "pulumi up --stack scale",
    ]

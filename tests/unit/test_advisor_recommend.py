"""Recommendations: reasons, exact commands and buckets, per phase; and the verdict."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from scaling.advisor.levels import judge
from scaling.advisor.recommend import Bucket, Kind, duration, recommend
from scaling.advisor.verdict import USAGE_EXIT_CODE, Verdict, decide
from scaling.metrics.model import ReadinessCheck, Reading, Sample
from scaling.model import PhaseSpec
from scaling.stackconfig import parse

T0 = 1_790_000_000.0


def _spec(phase: str) -> PhaseSpec:
    return parse({"sikka:phase": phase}, stack=phase)


def _history(build: Sequence[Sequence[Reading]], step: float = 60.0) -> list[Sample]:
    return [Sample(T0 + i * step, "direct", tuple(rs)) for i, rs in enumerate(build)]


def _pg(value: float | None, limit: float = 20) -> Reading:
    return Reading(
        "postgres.connections",
        "postgres",
        "127.0.0.1:5432",
        value,
        limit,
        "connections",
        None if value is not None else "connection refused",
    )


def _cpu(value: float) -> Reading:
    return Reading("host.cpu", "host", "laptop", value, None, "percent")


def test_duration_text() -> None:
    assert [duration(s) for s in (45, 600, 630, 3900, 7200, 200_000)] == [
        "45 s",
        "10 min",
        "10 min 30 s",
        "1 h 5 min",
        "2 h",
        "2 d 7 h",
    ]


def test_launch_sustained_breach_promotes_to_growth() -> None:
    spec = _spec("launch")  # connections threshold 80 % of 20
    history = _history([[_pg(10), _cpu(20)]] + [[_pg(18), _cpu(20)]] * 11)  # 90 % for 10 min
    advice = recommend(history, spec)
    (promote,) = advice.bucket(Bucket.IMMEDIATE)
    assert promote.kind is Kind.PROMOTE and promote.title == "promote to growth"
    assert promote.commands == ("pulumi preview -s growth", "sikka-scaling transition growth")
    (why,) = promote.reasons
    assert why == (
        "postgres.connections on 127.0.0.1:5432: 90.0 % of its limit, 10.0 points over the "
        "critical level of 80 % (thresholds.connectionsPercent) for 10 min (11 samples); "
        "peak 90.0 %"
    )
    # Staying in launch a while longer: max_connections sized at the 70 % target.
    (stay,) = advice.bucket(Bucket.SHORT_TERM)
    assert stay.kind is Kind.OPTIMISE
    assert stay.commands == ("pulumi config set -s launch --path sikka:postgres.maxConnections 26",)
    assert advice.promote and not advice.optimise
    outcome = decide([judge(r, spec) for r in history[-1].readings], advice)
    assert outcome.verdict is Verdict.RECOMMEND and outcome.exit_code == 4


def test_growth_promotes_to_scale_and_a_named_stack() -> None:
    spec = _spec("growth")  # cpu threshold 70
    history = _history([[_cpu(75)]] * 11)
    (promote,) = recommend(history, spec).bucket(Bucket.IMMEDIATE)
    assert promote.commands[1] == "sikka-scaling transition scale"
    named = recommend(history, spec, stack="growth-eu", next_stack="scale-eu")
    assert named.bucket(Bucket.IMMEDIATE)[0].commands == (
        "pulumi preview -s scale-eu",
        "sikka-scaling transition scale-eu",
    )


def test_one_spike_is_watched_not_acted_on() -> None:
    spec = _spec("launch")
    history = _history([[_pg(5)]] * 10 + [[_pg(19)]])
    advice = recommend(history, spec)
    assert advice.bucket(Bucket.IMMEDIATE) == [] and not advice.promote
    (watch,) = advice.bucket(Bucket.SHORT_TERM)
    assert watch.kind is Kind.WATCH and "0 s of the 10 min window" in watch.reasons[0]
    assert watch.title == "critical, not yet sustained: postgres.connections on 127.0.0.1:5432"
    outcome = decide([judge(r, spec) for r in history[-1].readings], advice)
    assert outcome.verdict is Verdict.WARNING and outcome.exit_code == 3


def test_scale_breach_gives_computed_actions_not_promotion() -> None:
    spec = _spec("scale")  # 12 gateways max x 2500, connections threshold 85
    gateways = [
        Reading("gateway.connections", "gateway", f"g{i}", 2200, 2500, "connections")
        for i in range(12)
    ]
    history = _history([gateways] * 11)
    advice = recommend(history, spec)
    (act,) = advice.bucket(Bucket.IMMEDIATE)
    assert act.kind is Kind.OPTIMISE and advice.optimise and not advice.promote
    # 26,400 sockets / (2,500 x 70 %) = 15.09 → 16
    assert act.commands == ("pulumi config set -s scale --path sikka:gateway.maxReplicas 16",)
    assert any("26,400 WebSocket connections" in r for r in act.reasons)
    assert advice.next_stack is None


def test_scale_breach_without_a_key_says_so() -> None:
    advice = recommend(_history([[_cpu(90)]] * 11), _spec("scale"))
    (act,) = advice.bucket(Bucket.IMMEDIATE)
    assert act.commands == () and "already covers the peak at its target" in act.title


def test_sustained_warning_prepares_the_move() -> None:
    spec = _spec("launch")  # warning from 60 %
    advice = recommend(_history([[_pg(13)]] * 11), spec)  # 65 %
    kinds = [(r.kind, r.bucket) for r in advice.recommendations]
    assert (Kind.PREPARE, Bucket.SHORT_TERM) in kinds
    prepare = next(r for r in advice.recommendations if r.kind is Kind.PREPARE)
    assert prepare.commands == ("pulumi preview -s growth",)
    assert "warning level of 60 %" in prepare.reasons[0]


def test_rising_trend_is_long_term() -> None:
    spec = _spec("launch")  # cpu threshold 60
    history = _history([[_cpu(20 + i)] for i in range(10)])  # +1 a minute, 29 at the end
    (plan,) = recommend(history, spec).bucket(Bucket.LONG_TERM)
    assert plan.title == "host.cpu on laptop reaches its 60 % threshold in about 31 min"
    assert "rising 60.00 points an hour" in plan.reasons[0]
    flat = recommend(_history([[_cpu(20)]] * 10), spec)
    assert flat.bucket(Bucket.LONG_TERM) == []


def test_unreachable_and_readiness() -> None:
    spec = _spec("growth")
    history = _history([[_pg(None, 100), _cpu(10)]])
    checks = [
        ReadinessCheck("replicas streaming", ok=False, detail="1 of 2", critical=True),
        ReadinessCheck("monitoring scrapes every target", ok=False, detail="9 of 11 up"),
        ReadinessCheck("pooler up", ok=True),
    ]
    advice = recommend(history, spec, checks=checks)
    immediate = {r.title: r for r in advice.bucket(Bucket.IMMEDIATE)}
    assert immediate["unreachable: postgres.connections on 127.0.0.1:5432"].reasons == (
        "connection refused",
    )
    assert immediate["not ready: replicas streaming"].reasons == ("1 of 2",)
    short = [r.title for r in advice.bucket(Bucket.SHORT_TERM)]
    assert short == ["not ready: monitoring scrapes every target"]
    outcome = decide([judge(r, spec) for r in history[-1].readings], advice, checks)
    assert outcome.verdict is Verdict.UNREACHABLE and outcome.exit_code == 6
    assert outcome.reasons[0].startswith("postgres.connections on 127.0.0.1:5432 unreachable")
    # Without the unreachable part, the failed critical check decides.
    reachable = _history([[_pg(10, 100)]])
    again = decide(
        [judge(r, spec) for r in reachable[-1].readings], recommend(reachable, spec), checks
    )
    assert again.verdict is Verdict.CRITICAL


def test_saturated_is_critical_now_and_all_fine_is_zero() -> None:
    spec = _spec("launch")
    full = _history([[_pg(20)]])
    outcome = decide([judge(r, spec) for r in full[-1].readings], recommend(full, spec))
    assert outcome.verdict is Verdict.CRITICAL
    calm = _history([[_pg(2), _cpu(5)]] * 3)
    fine = decide([judge(r, spec) for r in calm[-1].readings], recommend(calm, spec))
    assert fine.verdict is Verdict.OK and fine.exit_code == 0 and fine.reasons == ()


def test_exit_codes_are_distinct_and_usage_is_apart() -> None:
    codes = [v.value for v in Verdict]
    assert len(set(codes)) == len(codes) and USAGE_EXIT_CODE not in codes and 1 not in codes


@pytest.mark.parametrize("phase", ["launch", "growth", "scale"])
def test_no_history_no_advice(phase: str) -> None:
    advice = recommend([], _spec(phase))
    assert advice.recommendations == ()

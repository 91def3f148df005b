"""Launch phase, started through `sikka-scaling local up launch --json` (a subprocess)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import local_checks as checks
import pytest
from check_helpers import check_prometheus_agrees_with_direct
from local_fixtures import start_phase_with_cli
from local_helpers import Phase, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "scaling.cli")


@pytest.fixture(scope="module")
def phase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phase]:
    yield from start_phase_with_cli("launch", tmp_path_factory)


def test_summary_describes_the_launch_topology(phase: Phase) -> None:
    summary = phase.summary
    assert summary["phase"] == "launch"
    assert len(summary["gateways"]) == 1
    assert summary["postgres"]["replicas"] == [] and summary["postgres"]["pooler"] is None
    assert summary["redis"]["mode"] == "standalone"
    assert {"role", "pid", "port"} <= set(summary["processes"][0])
    assert "@" in summary["postgres"]["primary"] and phase.password not in str(summary)
    checks.check_processes_are_topology_nodes(phase)
    checks.check_all_processes_alive(phase)


def test_prometheus_scrapes_every_exporter(phase: Phase) -> None:
    waited = checks.check_monitoring_targets_up(phase)
    checks.check_monitoring_rules_loaded(phase)
    checks.check_monitoring_values(phase)
    checks.check_monitoring_keeps_secrets(phase)
    print(f"\n[{phase.spec.phase}] every scrape target up {waited:.1f}s after this test began")


def test_prometheus_and_direct_checks_agree(phase: Phase) -> None:
    check_prometheus_agrees_with_direct(phase)


def test_status_shows_prometheus_and_its_stop_keeps_the_samples(phase: Phase) -> None:
    """`local status` lists Prometheus and the exporters; Prometheus stops on SIGTERM,
    writing its TSDB out, and started again it still holds what it scraped before."""
    prometheus = phase.summary["prometheus"]
    shown = subprocess.run(
        [*CLI, "local", "status", "launch", "--state-dir", phase.run.state.state_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"prometheus   {prometheus['url']}" in shown.stdout
    assert all(url in shown.stdout for url in prometheus["exporters"].values())

    checks.check_monitoring_targets_up(phase)
    before = time.time()
    assert phase.run.stop_process("prometheus") == "stopped"
    log = Path(phase.run.entry("prometheus").log).read_text()
    assert "See you next time!" in log  # Prometheus's last line after a clean shutdown
    phase.run.start_process("prometheus")
    wait_for(
        "Prometheus ready again",
        lambda: httpx.get(prometheus["url"] + "/-/ready", timeout=2).status_code == 200,
        30,
    )
    samples = checks.prometheus_query(phase, f'count_over_time(up{{job="node"}}[{10 * 60}s])')
    kept = checks.prometheus_query(
        phase, f'count_over_time(up{{job="node"}}[{10 * 60}s] @ {before:.3f})'
    )
    assert kept and kept[0][1] >= 1, samples
    checks.check_monitoring_targets_up(phase)


def test_secrets_are_private(phase: Phase) -> None:
    state = Path(phase.run.state.state_dir)
    assert (Path(phase.summary["secrets_file"]).stat().st_mode & 0o777) == 0o600
    assert (Path(phase.summary["gateway_auth"]["key_file"]).stat().st_mode & 0o777) == 0o600
    secrets_conf = state / "redis" / "redis-0" / "secrets.conf"
    assert (secrets_conf.stat().st_mode & 0o777) == 0o600


def test_primary_reads_its_writes(phase: Phase) -> None:
    checks.check_row_reaches_replicas(phase)


def test_redis_memory_and_policy(phase: Phase) -> None:
    checks.check_redis_memory_policy(phase)


def test_location_fanout_through_nginx(phase: Phase) -> None:
    checks.check_fanout_across_gateways(phase)


def test_sticky_and_status_listener(phase: Phase) -> None:
    checks.check_sticky_and_status(phase)


def test_gateways_demand_tokens(phase: Phase) -> None:
    checks.check_gateway_auth_through_nginx(phase)


def test_a_second_run_fits_beside_the_first(
    phase: Phase, tmp_path_factory: pytest.TempPathFactory
) -> None:
    second_run = start_phase_with_cli("launch", tmp_path_factory)
    second = next(second_run)
    try:
        ports = {p["port"] for p in phase.summary["processes"]}
        second_ports = {p["port"] for p in second.summary["processes"]}
        assert ports.isdisjoint(second_ports)
        checks.check_fanout_across_gateways(second)
        checks.check_all_processes_alive(phase)
    finally:
        second_run.close()  # runs `local down` for the second run
    checks.check_all_processes_alive(phase)


def test_down_leaves_nothing(phase: Phase) -> None:
    checks.check_down_leaves_nothing(phase)


def test_failed_up_tears_down_and_names_the_part(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway that exits at once: `up` must stop what it had started (Postgres, Redis),
    remove its state and say which part failed, with the tail of its log."""
    from scaling.local import gateway, procs, runner
    from scaling.local.state import ProcessEntry

    started: list[ProcessEntry] = []
    real_spawn = procs.spawn

    def recording_spawn(entry: ProcessEntry, secrets: Mapping[str, str], **options: Any) -> None:
        real_spawn(entry, secrets, **options)
        started.append(entry)

    monkeypatch.setattr(procs, "spawn", recording_spawn)
    monkeypatch.setattr(gateway, "python_executable", lambda: "/bin/false")
    spec = runner.load_spec(Path(__file__).resolve().parents[2] / "Pulumi.launch.yaml")
    state_dir = tmp_path_factory.mktemp("local-broken") / "state"
    with pytest.raises(runner.LocalUpError) as caught:
        runner.up(spec, stack="launch", state_dir=state_dir)
    assert caught.value.part == "gateway-0"
    assert "exited" in caught.value.reason
    assert [e.name for e in started] == ["postgres-0", "redis-0", "gateway-0"]
    assert not any(procs.alive(e) for e in started)
    assert not state_dir.exists()

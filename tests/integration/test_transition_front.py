"""The front door of a transition, alone: a launch and a growth phase up side by side (no
data replication: growth starts independently, sharing only launch's secrets as a
transition's target does, so the clients' tokens stay valid), WebSocket subscribers through
launch's Nginx, then switch_front_door: they are closed with 1001 by the draining launch
gateway, reconnect through the very same URL and land on growth's gateways (growth's
metrics count them, and updates published through growth's Redis reach them). Then
restore_front_door puts launch's own upstream back."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from local_fixtures import ROOT
from local_helpers import Phase, wait_for
from transition_load import Subscribers, print_figures

from scaling.local import credentials, runner
from scaling.transition import local_front

pytestmark = pytest.mark.integration
SUBSCRIBERS = 6


def _up(stack: str, folder: Path, secrets: dict[str, str] | None = None) -> Phase:
    spec = runner.load_spec(ROOT / f"Pulumi.{stack}.yaml")
    with pytest.MonkeyPatch.context() as patch:
        if secrets is not None:
            fresh = credentials.new_secrets
            # The target inherits the source's secrets (and generates what the source lacks).
            patch.setattr(runner, "new_secrets", lambda: {**fresh(), **secrets})
        run = runner.up(spec, stack=stack, state_dir=folder, progress=runner.print_progress)
    return Phase(run, spec)


@pytest.fixture(scope="module")
def phases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Phase, Phase]]:
    base = tmp_path_factory.mktemp("front")
    with contextlib.ExitStack() as stack:
        launch = _up("launch", base / "launch")
        stack.callback(launch.run.down)
        growth = _up("growth", base / "growth", dict(launch.run.secrets))
        stack.callback(growth.run.down)
        yield launch, growth


def test_subscribers_follow_the_front_door_to_the_targets_gateways(
    phases: tuple[Phase, Phase],
) -> None:
    launch, growth = phases
    source, target = launch.run, growth.run
    assert source.secrets["gateway-jwt-secret"] == target.secrets["gateway-jwt-secret"]
    url = launch.nginx_ws
    conf = Path(source.entry("nginx").argv[source.entry("nginx").argv.index("-c") + 1])
    original = conf.read_text()
    subscribers = Subscribers(
        url, source.secrets["gateway-jwt-secret"], count=SUBSCRIBERS, duration=120
    )
    subscribers.start()
    try:
        assert subscribers.ready.wait(30), subscribers.figures()
        assert sum(local_front.open_connections(target).values()) == 0
        held = sum(local_front.open_connections(source).values())
        assert held == SUBSCRIBERS + 1  # and the publisher

        switched_at = time.monotonic()
        measurements = local_front.switch_front_door(source, target)
        print_figures("switch-front-door", measurements)

        def all_back() -> bool:
            subs = subscribers.subscribers
            return all(s.connected and s.connections >= 2 for s in subs)

        reconnected = wait_for("every subscriber reconnected", all_back, 30)
        # Updates flow again, now through growth's gateways and Redis.
        wait_for(
            "every subscriber receives updates after the switch",
            lambda: all(
                s.last_update is not None and s.last_update > switched_at + reconnected
                for s in subscribers.subscribers
            ),
            15,
        )
        wait_for(
            "the target's gateways hold every subscriber and the publisher",
            lambda: sum(local_front.open_connections(target).values()) == SUBSCRIBERS + 1,
            10,
        )
        on_target = local_front.open_connections(target)
        figures = subscribers.figures()
        print_figures("subscribers", {**figures, "target_connections": on_target})
    finally:
        subscribers.stop()

    assert measurements["connections_drained"] == SUBSCRIBERS + 1
    assert measurements["old_workers_left"] == 0  # their proxied WebSockets were closed
    assert set(measurements["source_gateways"].values()) == {"stopped"}
    assert not any(source.alive(e.name) for e in source.state.processes if e.tier == "gateway")
    # Every subscriber saw its connection closed with 1001 (going away), then came back.
    for sub in subscribers.subscribers:
        assert 1001 in sub.close_codes, (sub.client_id, sub.close_codes)
    assert source.alive("nginx"), "the front door itself stays up"
    # The source's state says whom its Nginx fronts now.
    reopened = runner.LocalRun.open(Path(source.state.state_dir))
    assert local_front.fronted_stack(reopened) == "growth"
    assert reopened.summary["front_door"]["upstreams"] == [
        g["url"].removeprefix("ws://").rstrip("/") for g in target.summary["gateways"]
    ]
    assert conf.read_text() != original

    # Rollback of the front door: the source's gateways again, its own upstream block back.
    restored = local_front.restore_front_door(source)
    print_figures("restore-front-door", restored)
    assert restored["restored"] is True
    assert conf.read_text() == original
    assert all(source.alive(e.name) for e in source.state.processes if e.tier == "gateway")
    assert local_front.fronted_stack(runner.LocalRun.open(Path(source.state.state_dir))) is None
    answer = httpx.get(f"{launch.summary['nginx']['url']}/livez", timeout=5)
    assert answer.status_code == 200 and answer.json()["gateway"] == "gateway-0"

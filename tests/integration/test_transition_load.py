"""The transition load harness on its own (tests/integration/transition_load.py), against
one running launch phase whose parts are restarted under it: PostgreSQL (fast shutdown),
Redis and the gateway (a drain: 1001). The harness must see every interruption, retry until
each write is acknowledged, and count exactly what is there afterwards."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from local_fixtures import start_phase
from local_helpers import Phase
from transition_load import Load, print_figures, redis_endpoints

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phase]:
    yield from start_phase("launch", tmp_path_factory)


def test_the_harness_counts_every_write_across_restarts(launch: Phase) -> None:
    run, summary = launch.run, launch.summary
    load = Load(
        pg_urls=[summary["postgres"]["primary"]],
        pg_password=launch.password,
        redis_endpoints=redis_endpoints(summary),
        redis_password=launch.redis_password,
        ws_url=launch.nginx_ws,
        jwt_secret=run.secrets["gateway-jwt-secret"],
        subscribers=4,
        duration=120,
    )
    load.start()
    outages = {}
    try:
        for name in ("postgres-0", "redis-0", "gateway-0"):
            time.sleep(1.0)
            stopped = time.monotonic()
            assert run.stop_process(name) == "stopped"
            time.sleep(1.0)
            run.start_process(name)
            outages[name] = round(time.monotonic() - stopped, 3)
        time.sleep(3.0)  # everything writes and is subscribed again
    finally:
        load.stop()
    figures = load.results()
    print_figures("load across restarts (launch)", {**figures, "outages": outages})

    # Nothing acknowledged is lost; every number is accounted for.
    assert figures["rows_acknowledged"] == figures["rows_present"] > 0
    assert figures["keys_acknowledged"] == figures["keys_present"] > 0
    assert figures["rows_missing"] == [] and figures["keys_missing"] == []
    # The harness saw the interruptions (rather than writing past them somehow) ...
    assert figures["row_failures"] > 0
    assert figures["longest_row_gap_seconds"] >= 0.9
    assert figures["longest_key_gap_seconds"] >= 0.9
    ws = figures["ws"]
    assert ws["close_codes"].get("1001") == 4  # the gateway's drain
    assert ws["reconnections"] >= 4
    # ... and came back after each: writes resumed and the subscribers are back.
    assert ws["connected_at_stop"] == 4

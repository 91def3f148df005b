"""Settings for the whole suite."""

from __future__ import annotations

import signal

import pytest
from _pytest.nodeid import NodeId

# A shell starts its background jobs with SIGINT ignored, and a child inherits that: a suite
# started in the background (CI under `cmd &`, nohup) would then run every process the tests
# interrupt with SIGINT (the local runner, the PgBouncer supervisor) unable to receive it.
# Python's own handler is not inherited across exec, so the children start with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# Parallel runs (pytest-xdist with `--dist loadgroup`, as the Makefile runs the suite): each
# module runs whole in one worker, in file order, so its module-scoped fixtures (a phase, a
# Redis cluster, a rendered stack) start once and its ordered chains keep their order; a
# phase shared by several modules is one group of its own (tests/integration/conftest.py).
XDIST_GROUP = "xdist_group"
# Tests that assert a timing which parallel load on a 2-core machine breaks (a transition's
# write gaps under 5 s): `make test` runs them after the parallel run, alone.
SERIAL = "serial"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{SERIAL}: asserts timings that parallel load would break; `make test` runs it alone,"
        " after the parallel run",
    )


# The longest groups, handed out first so that none starts last (`--durations`: a chain of
# phases, or a phase many modules share, takes minutes; the rest seconds). Order only: a
# group missing here runs all the same, in collection order after these.
LONGEST_FIRST = (
    "growth_phase",
    "launch_phase",
    "tests/integration/test_transition_data.py",
    "tests/integration/test_cutover_scripts.py",
    "tests/integration/test_local_scale.py",
    "tests/integration/test_local_interrupt.py",
    "tests/integration/test_local_launch.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test without a group joins its module's. pytest-xdist tells its scheduler an
    item's group by a suffix on the node id (``path::test@group``), which 3.8 writes to
    ``item._nodeid``: pytest 9 no longer reads that (a node's id is ``item._id``, a NodeId;
    pytest-xdist issue 1386), so the suffix is written here, after pytest-xdist's own hook
    (skipped once a fixed pytest-xdist has written it; tests/unit/test_parallel_groups.py)."""
    groups: dict[int, str] = {}  # id(item) -> its group
    for item in items:
        if item.get_closest_marker(XDIST_GROUP) is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
        groups[id(item)] = "_".join(
            sorted({str(m.args[0]) for m in item.iter_markers(XDIST_GROUP)})
        )
    if not getattr(config.option, "loadgroup", False):
        return
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(groups[id(item)], len(rank)))  # stable: file order kept
    for item in items:
        suffix = f"@{groups[id(item)]}"
        if not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)

"""The local runner itself is the fixture (see local_fixtures.py): one run per phase module,
or one run shared by the modules that leave it as they found it (`launch_phase`,
`growth_phase`), torn down even when a test (or `up`) fails, each in its own state folder
under pytest's tmp dir. This file makes the project and the helper modules importable, and
runs the users of a shared phase one after another, stopping the phase after its last one."""

from __future__ import annotations

import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = str(Path(__file__).resolve().parent)
for folder in (str(ROOT), HERE):
    if folder not in sys.path:
        sys.path.insert(0, folder)

from local_fixtures import SHARED, SharedPhases  # noqa: E402
from local_helpers import Phase  # noqa: E402

_REGISTRY = pytest.StashKey[SharedPhases]()


# Within a shared phase's group: the tests that leave it as they found it first, in file
# order; then the destructive ones (kills, failovers: the phase serves again afterwards, but
# differently, e.g. another leader), in file order; the one that ends the phase last.
DESTRUCTIVE = "destructive"
ENDS_PHASE = "ends_phase"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{DESTRUCTIVE}: on a shared phase, runs after the tests that leave it as they found it",
    )
    config.addinivalue_line("markers", f"{ENDS_PHASE}: on a shared phase, runs last (`down`)")


def _shared(item: pytest.Item) -> set[str]:
    return set(SHARED) & set(getattr(item, "fixturenames", ()))


def _rank(item: pytest.Item) -> int:
    if item.get_closest_marker(ENDS_PHASE):
        return 2
    return 1 if item.get_closest_marker(DESTRUCTIVE) else 0


def _in_group(item: pytest.Item, name: str) -> None:
    """Puts ``item`` in the xdist group ``name`` alone (not its module's, which
    tests/conftest.py gives every test that has none)."""
    item.own_markers[:] = [m for m in item.own_markers if m.name != "xdist_group"]
    item.add_marker(pytest.mark.xdist_group(name))


# tryfirst: before pytest-xdist reads the groups (it runs both orders of the two conftests'
# hooks correctly: `_in_group` replaces a module group).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The users of a shared phase run together, where its first user was, ordered by
    `_rank` (stable: file order within a rank), in one xdist worker (the group named after
    the phase); a test on two shared phases would keep both up, so none does."""
    groups: dict[str, list[pytest.Item]] = {}
    ordered: list[pytest.Item | str] = []
    for item in items:
        names = _shared(item)
        assert len(names) <= 1, f"{item.nodeid} uses two shared phases: {sorted(names)}"
        if not names:
            ordered.append(item)
            continue
        (name,) = names
        _in_group(item, name)
        if name not in groups:
            groups[name] = []
            ordered.append(name)
        groups[name].append(item)
    items[:] = [
        found
        for entry in ordered
        for found in (sorted(groups[entry], key=_rank) if isinstance(entry, str) else [entry])
    ]


@pytest.fixture(scope="session")
def shared_phases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedPhases]:
    registry = SharedPhases(tmp_path_factory)
    request.config.stash[_REGISTRY] = registry
    try:
        yield registry
    finally:
        registry.stop_all()


@pytest.fixture(scope="module")
def launch_phase(shared_phases: SharedPhases) -> Phase:
    """The launch stack as written, shared (see local_fixtures.SHARED)."""
    return shared_phases.get("launch_phase")


@pytest.fixture(scope="module")
def growth_phase(shared_phases: SharedPhases) -> Phase:
    """The growth stack with small pools, shared (see local_fixtures.SHARED)."""
    return shared_phases.get("growth_phase")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    """After the module fixtures built on it are gone (pytest's own teardown, inside the
    yield), a shared phase whose last user this was is stopped."""
    yield
    registry = item.config.stash.get(_REGISTRY, None)
    if registry is None:
        return
    following = _shared(nextitem) if nextitem is not None else set()
    for name in _shared(item) - following:
        registry.stop(name)

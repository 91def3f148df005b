"""Free ports claimed machine-wide: two allocators (two processes' runs, parallel test
workers) never hand out the same port, even when they would pick it first."""

from __future__ import annotations

from pathlib import Path

from scaling.local import ports


def test_a_fresh_claim_is_refused_and_a_stale_one_renewed(tmp_path: Path) -> None:
    assert ports.claim(20001, tmp_path, now=1000.0)
    assert not ports.claim(20001, tmp_path, now=1000.0 + ports.CLAIM_SECONDS - 1)
    assert ports.claim(20001, tmp_path, now=1000.0 + ports.CLAIM_SECONDS + 1)
    assert not ports.claim(20001, tmp_path, now=1000.0 + ports.CLAIM_SECONDS + 2)
    assert ports.claim(20002, tmp_path, now=1000.0)


def test_two_allocators_with_the_same_choices_hand_out_distinct_ports(tmp_path: Path) -> None:
    first, second = (
        ports.PortAllocator(seed=7, claims=tmp_path),
        ports.PortAllocator(seed=7, claims=tmp_path),
    )
    mine = [first.take() for _ in range(5)] + [first.take(count=3)]
    theirs = [second.take() for _ in range(5)] + [second.take(count=3)]
    # Same seed: without claims the second would hand out the very same ports.
    assert ports.PortAllocator(seed=7, claims=tmp_path / "other").take() == mine[0]
    assert not set(mine) & set(theirs)
    ranges = {p for start in (mine[-1], theirs[-1]) for p in range(start, start + 3)}
    assert len(ranges) == 6
    assert {int(p.name) for p in tmp_path.iterdir() if p.is_file()} >= set(mine) | set(theirs)


def test_without_a_writable_claims_folder_the_bind_decides(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert ports.claim(20003, blocker / "claims")  # its parent is a file: no claims

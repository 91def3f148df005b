"""Open-file limits of the local runner's children (scaling/render/limits.py says what each
server needs): each child's soft RLIMIT_NOFILE is raised to its need when it starts, and
`up` refuses before starting anything when the hard limit it inherits is below one."""

from __future__ import annotations

import contextlib
import os
import resource

from scaling.model import PhaseSpec
from scaling.render.limits import open_files
from scaling.topology import Topology


def hard_limit() -> int:
    """This process's hard open-file limit, which its children inherit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard


def limit_for(files: int) -> tuple[int, int]:
    """(soft, hard) for a child that needs ``files``: its soft limit raised to that (never
    below ours) within the hard one, which it keeps. The child may run under another
    account (PostgreSQL's), which could not raise its hard limit: as root,
    :func:`raise_hard_limit` raises ours first."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    if soft == infinity or soft >= files:
        return soft, hard
    return (files if hard == infinity else min(files, hard)), hard


def raise_hard_limit(files: int) -> None:
    """Raise this process's hard limit to ``files`` where it may (root with
    CAP_SYS_RESOURCE), for the children to inherit; elsewhere leave it as it is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < files:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, files))


def largest_need(spec: PhaseSpec, topology: Topology) -> int:
    needs = [open_files(spec, n.tier, n.role) for n in topology.nodes]
    return max((need.files for need in needs if need is not None), default=0)


def shortfalls(spec: PhaseSpec, topology: Topology, hard: int) -> list[str]:
    """One line per setting whose servers need more open files than ``hard`` allows."""
    if hard == resource.RLIM_INFINITY:
        return []
    found: dict[str, tuple[int, list[str]]] = {}
    for node in topology.nodes:
        need = open_files(spec, node.tier, node.role)
        if need is not None and need.files > hard:
            files, names = found.setdefault(need.key, (need.files, []))
            names.append(node.name)
            found[need.key] = (max(files, need.files), names)
    return [
        f"sikka:{key}: {', '.join(names)} need(s) {files} open files, above the hard "
        f"limit of {hard} that `local up` inherits (ulimit -Hn); raise it (limits.conf "
        "nofile, systemd LimitNOFILE=) or lower the setting"
        for key, (files, names) in found.items()
    ]


class TooFewOpenFiles(RuntimeError):
    pass


def check(spec: PhaseSpec, topology: Topology) -> None:
    """Refuse (naming each setting and the hard limit) before anything starts; as root,
    raise the hard limit instead, before the run's keeper inherits it."""
    raise_hard_limit(largest_need(spec, topology))
    lines = shortfalls(spec, topology, hard_limit())
    if lines:
        raise TooFewOpenFiles("too few open files allowed:\n  " + "\n  ".join(lines))

"""Open-file limits of the local runner's children (scaling/render/limits.py says what each
server needs): each child's soft RLIMIT_NOFILE is raised to its need when it starts, and
`up` refuses before starting anything when the hard limit it inherits is below one."""

from __future__ import annotations

import os
import resource

from scaling.model import PhaseSpec
from scaling.render.limits import open_files
from scaling.topology import Topology


def hard_limit() -> int:
    """This process's hard open-file limit, which its children inherit (root may raise it)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard


def may_raise_hard_limit() -> bool:
    return os.geteuid() == 0


def limit_for(files: int) -> tuple[int, int]:
    """(soft, hard) for a child that needs ``files``: its soft limit raised to that (never
    below ours), the hard one kept (raised too only as root: :func:`check` refused else)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinity = resource.RLIM_INFINITY
    if hard != infinity and files > hard:
        hard = files
    if soft == infinity or soft >= files:
        return soft, hard
    return files, hard


def shortfalls(spec: PhaseSpec, topology: Topology, hard: int, *, can_raise: bool) -> list[str]:
    """One line per setting whose servers need more open files than ``hard`` allows."""
    if can_raise or hard == resource.RLIM_INFINITY:
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
    """Refuse (naming each setting and the hard limit) before anything starts."""
    lines = shortfalls(spec, topology, hard_limit(), can_raise=may_raise_hard_limit())
    if lines:
        raise TooFewOpenFiles("too few open files allowed:\n  " + "\n  ".join(lines))

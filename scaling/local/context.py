"""What every tier starter shares: the spec and its topology, the run's state, secrets, ports,
folders, and where each started node listens."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaling.local import procs
from scaling.local.follow import Follow
from scaling.local.keeper import Keeper
from scaling.local.ports import PortAllocator
from scaling.local.state import ProcessEntry, RunState
from scaling.model import MONITORING_USER, PhaseSpec
from scaling.render.endpoints import Endpoint
from scaling.render.limits import open_files
from scaling.topology import Topology

POSTGRES_ACCOUNT = "postgres"
# The secret of the exporters' login (scaling.render.env.SECRET_VARIABLES).
MONITORING_SECRET = "monitoring-password"


@dataclass
class Context:
    spec: PhaseSpec
    state: RunState
    secrets: dict[str, str]
    ports: PortAllocator
    # What runs: every process is one node of it (scaling.local.topology.local_topology).
    topology: Topology
    # Node name -> where it listens here, filled in as the nodes start.
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    # Service name -> where its started targets serve it, for targets that serve several
    # services on several ports (a router: read-write and read-only).
    service_endpoints: dict[str, list[Endpoint]] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda message: None
    notes: list[str] = field(default_factory=list)
    # The part being started, for the error report when something fails half-way.
    part: str = "setup"
    part_log: str | None = None
    # Forks every process of the run in the run's session (scaling.local.keeper); without
    # one (tests that drive a single tier) processes are started directly.
    keeper: Keeper | None = None
    # The running phase this one starts as a replica of (a transition's target), or None.
    follow: Follow | None = None
    _pg_root: Path | None = None

    @property
    def state_dir(self) -> Path:
        return Path(self.state.state_dir)

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def log_path(self, name: str) -> str:
        return str(self.log_dir / f"{name}.log")

    def begin(self, part: str, log: str | None = None, action: str = "starting") -> None:
        self.part, self.part_log = part, log
        self.progress(f"{action} {part}")

    def start(self, entry: ProcessEntry) -> ProcessEntry:
        """Spawn and record at once, so a crash of `up` itself still leaves `down` a list
        (and what a kill -9 catches between the two is still in the run's session)."""
        self.part, self.part_log = entry.name, entry.log
        if entry.open_files is None:
            need = open_files(self.spec, entry.tier, entry.role)
            entry.open_files = need.files if need else None
        procs.spawn(entry, self.secrets, keeper=self.keeper)
        self.state.processes.append(entry)
        self.state.save()
        return entry

    def run_tool(self, argv: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        """:func:`procs.run_tool` in the run's session."""
        return procs.run_tool(argv, keeper=self.keeper, **options)

    def endpoints_of(self, target: str) -> list[Endpoint]:
        """Where a node listens, or the started nodes behind a service of the topology."""
        if target in self.service_endpoints:
            return list(self.service_endpoints[target])
        if target in self.endpoints:
            return [self.endpoints[target]]
        targets = self.topology.service(target).targets
        return [self.endpoints[name] for name in targets if name in self.endpoints]

    @property
    def monitoring_user(self) -> str | None:
        """The exporters' login (PostgreSQL and PgBouncer admit it, the roles create it)
        where the topology has exporters that use it; None where it has none."""
        readers = [
            node
            for node in self.topology.tier("monitoring")
            if MONITORING_SECRET in node.secret_env.values()
        ]
        return MONITORING_USER if readers else None

    def endpoint(self, target: str) -> Endpoint:
        found = self.endpoints_of(target)
        if not found:
            raise KeyError(f"nothing started behind {target!r}")
        return found[0]

    # ------------------------------------------------------------------ PostgreSQL

    @property
    def pg_user(self) -> str | None:
        """PostgreSQL and PgBouncer refuse to run as root: run them as `postgres` then."""
        return POSTGRES_ACCOUNT if procs.running_as_root() else None

    def pg_ids(self) -> tuple[int | None, int | None]:
        if self.pg_user is None:
            return None, None
        account = pwd.getpwnam(self.pg_user)
        return account.pw_uid, account.pw_gid

    def chown_pg(self, path: Path) -> None:
        uid, gid = self.pg_ids()
        if uid is not None and gid is not None:
            os.chown(path, uid, gid)

    def pg_dir(self, path: Path, mode: int = 0o700) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        self.chown_pg(path)
        return path

    @property
    def pg_root(self) -> Path:
        """A folder the postgres account can reach: inside the state dir when every parent
        lets it through, else a private folder under the temp dir (recorded for `down`)."""
        if self._pg_root is None:
            inside = self.state_dir / "postgres"
            if self.pg_user is None or _traversable(self.state_dir):
                self._pg_root = self.pg_dir(inside)
            else:
                outside = Path(tempfile.mkdtemp(prefix=f"sikka-{self.state.stack}-pg-"))
                self.state.extra_dirs.append(str(outside))
                self.state.save()
                self._pg_root = self.pg_dir(outside)
                # A pointer for humans looking in the state dir.
                (self.state_dir / "postgres-dir").write_text(f"{outside}\n")
        return self._pg_root


def _traversable(path: Path) -> bool:
    """Whether another account may walk down to ``path`` (o+x on it and every parent)."""
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in (path, *path.parents))


def python_executable() -> str:
    return sys.executable or shutil.which("python3") or "python3"

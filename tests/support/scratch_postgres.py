"""A bare PostgreSQL on 127.0.0.1 for tests that need a server of their own, not a phase.

initdb with SCRAM and the ``postgres`` superuser's password, started by pg_ctl as the
``postgres`` account (PostgreSQL refuses root), listening on a port from the project's
PortAllocator (claimed machine-wide, so parallel workers never share one). Its folder is
under /tmp (1777): pytest's tmp dir is root-only and the postgres account must reach it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scaling.local.ports import PortAllocator
from scaling.local.procs import pg_bin


def as_postgres() -> list[str]:
    """The command prefix that runs a program as the postgres account (none when not root)."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass(frozen=True)
class ScratchPostgres:
    port: int
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    def stop(self) -> None:
        """A fast stop (sessions ended, a clean shutdown), then the folder removed."""
        subprocess.run(
            [*as_postgres(), pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            check=False, capture_output=True, timeout=120,
        )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)


def start(prefix: str, password: str, *settings: str) -> ScratchPostgres:
    """A started server; ``settings`` are extra ``-c name=value`` options."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    server = ScratchPostgres(PortAllocator().take(), root)
    (root / "pw").write_text(password + "\n")
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        os.chown(root / "pw", account.pw_uid, account.pw_gid)

    def run(*argv: str) -> None:
        subprocess.run([*as_postgres(), *argv], check=True, capture_output=True, timeout=120)

    run(pg_bin("initdb"), "-D", str(server.data), "-U", "postgres", f"--pwfile={root / 'pw'}",
        "--auth=scram-sha-256", "--no-sync")  # fmt: skip
    options = " ".join(
        [f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories={root}",
         *settings]
    )  # fmt: skip
    run(pg_bin("pg_ctl"), "-D", str(server.data), "-o", options, "-l", str(root / "log"), "-w",
        "start")  # fmt: skip
    return server

"""etcd's command line: one member of the DCS Patroni keeps its leader lock in.

Plain flags, the way the etcd images are run; the same for a container and a local process,
only the addresses and the data folder differ.
"""

from __future__ import annotations

from dataclasses import dataclass

from scaling.model import PhaseSpec
from scaling.render.endpoints import Endpoint

CLIENT_PORT = 2379
PEER_PORT = 2380


@dataclass(frozen=True)
class EtcdMember:
    name: str
    client: Endpoint  # where clients (Patroni) reach it
    peer: Endpoint  # where the other members reach it


def cluster_token(spec: PhaseSpec) -> str:
    """Members of two stacks never join each other's cluster."""
    return f"{spec.name_prefix}-etcd"


def etcd_arguments(
    spec: PhaseSpec,
    member: EtcdMember,
    peers: tuple[EtcdMember, ...],
    data_dir: str,
    *,
    listen_host: str,
) -> tuple[str, ...]:
    initial = ",".join(f"{p.name}=http://{p.peer}" for p in peers)
    return (
        f"--name={member.name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls=http://{listen_host}:{member.client.port}",
        f"--advertise-client-urls=http://{member.client}",
        f"--listen-peer-urls=http://{listen_host}:{member.peer.port}",
        f"--initial-advertise-peer-urls=http://{member.peer}",
        f"--initial-cluster={initial}",
        "--initial-cluster-state=new",
        f"--initial-cluster-token={cluster_token(spec)}",
        # Patroni speaks the v3 API; keys of old revisions are compacted hourly.
        "--auto-compaction-mode=periodic",
        "--auto-compaction-retention=1h",
        "--quota-backend-bytes=2147483648",
    )

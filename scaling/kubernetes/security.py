"""Pod and container hardening shared by every workload the builder emits.

Each pod runs as a fixed non-root UID with the runtime's default seccomp profile; each
container drops every capability, cannot escalate privileges and, where the image allows,
has a read-only root filesystem with emptyDirs for the paths it writes.
"""

from __future__ import annotations

import math
from typing import Any

# UIDs baked into the upstream images: the official valkey/redis images run as 999, the
# official nginx image as 101 ("nginx"). The gateway image runs as an unprivileged 10001.
REDIS_UID = 999
NGINX_UID = 101
GATEWAY_UID = 10001


def pod_security_context(uid: int, *, fs_group: bool = False) -> dict[str, Any]:
    context: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if fs_group:
        # Volumes (PVCs) become group-writable for the pod's UID without a root init step.
        context["fsGroup"] = uid
        context["fsGroupChangePolicy"] = "OnRootMismatch"
    return context


def container_security_context(uid: int, *, read_only_root: bool = True) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def millicores(value: int) -> str:
    return f"{value // 1000}" if value % 1000 == 0 else f"{value}m"


def resources(
    cpu_request_m: int, memory_request_mi: int, cpu_limit_m: int, memory_limit_mi: int
) -> dict[str, Any]:
    if cpu_limit_m < cpu_request_m or memory_limit_mi < memory_request_mi:
        raise ValueError("a container's limits must not be below its requests")
    return {
        "requests": {"cpu": millicores(cpu_request_m), "memory": f"{memory_request_mi}Mi"},
        "limits": {"cpu": millicores(cpu_limit_m), "memory": f"{memory_limit_mi}Mi"},
    }


def empty_dir(name: str, *, size_mi: int = 64, memory: bool = False) -> dict[str, Any]:
    source: dict[str, Any] = {"sizeLimit": f"{size_mi}Mi"}
    if memory:
        # tmpfs: files holding secrets never touch the node's disk.
        source["medium"] = "Memory"
    return {"name": name, "emptyDir": source}


def pod_spec(
    uid: int,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    *,
    fs_group: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A hardened pod spec: no service-account token (nothing here calls the API)."""
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(uid, fs_group=fs_group),
        "containers": containers,
    }
    spec.update(extra)
    if volumes:
        spec["volumes"] = volumes
    return spec

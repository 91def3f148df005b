"""The capacity table as data: each phase's defaults, spelled as stack files spell them.

A stack file overrides only what differs; :func:`scaling.stackconfig.merge` lays the
overrides over these defaults before validation.
"""

from __future__ import annotations

from typing import Any

from scaling.model import Phase

PHASE_DEFAULTS: dict[Phase, dict[str, Any]] = {
    Phase.LAUNCH: {
        "platform": "docker",
        "capacity": {
            "concurrentUsers": {"min": 1000, "max": 2000},
            "trips": {"min": 200, "max": 500},
        },
        "postgres": {
            "mode": "single",
            "image": "postgres:17.6-bookworm",
            "maxConnections": 20,
            "readReplicas": 0,
            "memoryMb": 1024,
            "storageGb": 10,
        },
        "pooler": {
            "enabled": False,
            "maxClientConn": 400,
            "defaultPoolSize": 12,
            "readPoolSize": 12,
            "reservePoolSize": 3,
            "processes": 1,
        },
        "redis": {"mode": "standalone", "maxMemoryMb": 256, "maxClients": 1000, "storageGb": 1},
        "gateway": {
            "maxConnections": 500,
            "replicas": 1,
            "maxReplicas": 1,
            "connectionsPerReplica": 500,
        },
        # Nginx: the table's 1,024 connections per worker, and as many workers as the sizing
        # rule (rules.nginx_capacity) needs for 500 WebSockets with headroom: one worker
        # needs 1,282, each of two 726. perClientConnections: at most a sixteenth of one
        # instance's connections (workerConnections x workerProcesses / 16), in every phase.
        "nginx": {"workerConnections": 1024, "workerProcesses": 2, "perClientConnections": 64},
        "thresholds": {"cpuPercent": 60, "memoryPercent": 70, "connectionsPercent": 80},
        "autoscaling": {"enabled": False},
        # Prometheus (Docker): its documentation's 1-2 bytes a sample, at 4 samples a minute
        # for an estimated ~15k series (launch), ~50k (growth), ~100k (scale): about 1, 7 and
        # 26 GB over the days kept, in volumes of 5, 20 and 50 GB; past 80 % of the volume
        # Prometheus drops its oldest blocks instead of filling the disk.
        "monitoring": {"retentionDays": 7, "storageGb": 5},
    },
    Phase.GROWTH: {
        "platform": "docker",
        "capacity": {
            "concurrentUsers": {"min": 3000, "max": 5000},
            "trips": {"min": 600, "max": 1200},
        },
        "postgres": {
            "mode": "replicated",
            "image": "postgres:17.6-bookworm",
            "maxConnections": 100,
            "readReplicas": 2,
            "memoryMb": 4096,
            "storageGb": 50,
            "synchronousMode": "on",
        },
        # max_client_conn: 20 % of peak concurrent users hold a pooled session at once.
        # Two PgBouncers: each one's pools fit in PostgreSQL's connections twice over. Two
        # processes each (so_reuseport), each with half its pooler's pools: one process
        # saturates a core at 10x oversubscription (benchmarks/pooler.py).
        "pooler": {
            "enabled": True,
            "replicas": 2,
            "maxClientConn": 1000,
            "defaultPoolSize": 40,
            "readPoolSize": 40,
            "reservePoolSize": 5,
            "processes": 2,
        },
        "redis": {
            "mode": "sentinel",
            "maxMemoryMb": 2048,
            "maxClients": 4000,
            "replicas": 2,
            "sentinels": 3,
            "quorum": 2,
            "minReplicasToWrite": 1,
            "storageGb": 6,
        },
        "gateway": {
            "maxConnections": 2000,
            "replicas": 2,
            "maxReplicas": 2,
            "connectionsPerReplica": 1000,
        },
        # 2,048 per worker: two workers would need 2,668 each for 2,000 WebSockets with
        # headroom, three need 1,826.
        "nginx": {"workerConnections": 2048, "workerProcesses": 3, "perClientConnections": 256},
        "thresholds": {"cpuPercent": 70, "memoryPercent": 75, "connectionsPercent": 85},
        "autoscaling": {"enabled": False},
        "monitoring": {"retentionDays": 15, "storageGb": 20},
    },
    Phase.SCALE: {
        "platform": "kubernetes",
        "capacity": {
            "concurrentUsers": {"min": 10000},
            "trips": {"min": 2000},
        },
        "postgres": {
            "mode": "citus",
            "image": "postgres:17.6-bookworm",
            "maxConnections": 200,
            "readReplicas": 2,
            "memoryMb": 8192,
            "storageGb": 200,
            "shards": 4,
            "coordinatorInstances": 2,
            "instancesPerShard": 2,
            "synchronousMode": "on",
        },
        "pooler": {
            "enabled": True,
            "replicas": 2,
            "maxClientConn": 4000,
            "defaultPoolSize": 85,
            "readPoolSize": 85,
            "reservePoolSize": 10,
            "processes": 2,
        },
        "redis": {
            "mode": "cluster",
            "maxMemoryMb": 65536,
            "maxClients": 10000,
            "masters": 3,
            "replicasPerMaster": 1,
            "minReplicasToWrite": 1,
            # 64 GB over 3 masters: ~22 GB of memory per node, 3x that on disk for the AOF.
            "storageGb": 64,
        },
        "gateway": {
            "maxConnections": 10000,
            "replicas": 4,
            "maxReplicas": 12,
            "connectionsPerReplica": 2500,
        },
        # 4,096 per worker: 2 replicas x 4 workers need 3,356 each for 10,000 WebSockets.
        "nginx": {
            "workerConnections": 4096,
            "workerProcesses": 4,
            "replicas": 2,
            "maxReplicas": 6,
            "perClientConnections": 1024,
        },
        # At scale the HPA holds CPU at 70 % and memory at 80 %; alerts fire above that.
        "thresholds": {"cpuPercent": 70, "memoryPercent": 80, "connectionsPercent": 85},
        "autoscaling": {"enabled": True, "cpuTargetPercent": 70, "memoryTargetPercent": 80},
        "monitoring": {"retentionDays": 30, "storageGb": 50},
    },
}

"""The machine the check runs on, through psutil: CPU, memory, disk I/O and network.

CPU and the I/O rates are measured over one short interval (:data:`INTERVAL`); memory is
the share in use (psutil's ``virtual_memory().percent``, as node_exporter's
``1 - MemAvailable / MemTotal``).
"""

from __future__ import annotations

import socket
import time

import psutil

from scaling.metrics.model import Reading

INTERVAL = 1.0  # seconds CPU and the I/O rates are averaged over


def probe(interval: float = INTERVAL) -> list[Reading]:
    instance = socket.gethostname()
    disk0 = psutil.disk_io_counters()
    net0 = psutil.net_io_counters()
    start = time.monotonic()
    cpu = psutil.cpu_percent(interval=interval)
    elapsed = max(time.monotonic() - start, 1e-3)
    disk1 = psutil.disk_io_counters()
    net1 = psutil.net_io_counters()
    memory = psutil.virtual_memory()
    readings = [
        Reading("host.cpu", "host", instance, float(cpu), 100.0, "percent"),
        Reading("host.memory", "host", instance, float(memory.percent), 100.0, "percent"),
    ]
    if disk0 is not None and disk1 is not None:
        moved = (disk1.read_bytes - disk0.read_bytes) + (disk1.write_bytes - disk0.write_bytes)
        readings.append(Reading("host.disk_io", "host", instance, moved / elapsed, None, "bytes/s"))
    else:
        readings.append(
            Reading(
                "host.disk_io",
                "host",
                instance,
                None,
                None,
                "bytes/s",
                error="no disk counters on this machine",
            )
        )
    moved = (net1.bytes_sent - net0.bytes_sent) + (net1.bytes_recv - net0.bytes_recv)
    readings.append(Reading("host.network", "host", instance, moved / elapsed, None, "bytes/s"))
    return readings

"""Monitoring: the phase's Prometheus and its exporters (scaling/topology/monitoring.py)."""

from __future__ import annotations

from components.tier import TierComponent
from scaling.exports import monitoring_endpoints


class Monitoring(TierComponent):
    tier = "monitoring"
    type_token = "sikka:monitoring:Monitoring"
    describe = staticmethod(monitoring_endpoints)
    prometheus_url: str | None
    scrape_jobs: list[str]

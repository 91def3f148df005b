"""The DNS names a set of Kubernetes objects defines, read off the objects themselves.

Whatever a client is told to connect to (the gateways' environment, Nginx's upstream, the
stack's exports) must be one of these: a Service's name, a StatefulSet pod's name under
its governing headless Service, or a Service the StackGres operator creates for a
cluster. Deployment pods have no stable name and define none.
"""

from __future__ import annotations

from collections.abc import Iterable

from scaling.topology.network import pod_fqdn, service_fqdn

from .manifests import Manifest
from .postgres import operator_services


def _headless_services(manifests: list[Manifest]) -> set[tuple[str | None, str]]:
    return {
        (m.namespace, m.name)
        for m in manifests
        if m.kind == "Service" and m.body["spec"].get("clusterIP") == "None"
    }


def defined_hosts(manifests: Iterable[Manifest]) -> set[str]:
    objects = list(manifests)
    headless = _headless_services(objects)
    hosts: set[str] = set()
    for m in objects:
        if m.namespace is None:
            continue
        if m.kind == "Service":
            hosts.add(service_fqdn(m.name, m.namespace))
        elif m.kind == "StatefulSet":
            governing = m.body["spec"]["serviceName"]
            # Pod records exist only under a headless Service of that name.
            if (m.namespace, governing) in headless:
                hosts |= {
                    pod_fqdn(f"{m.name}-{i}", governing, m.namespace)
                    for i in range(m.body["spec"]["replicas"])
                }
        hosts |= {service_fqdn(s, m.namespace) for s in operator_services(m.kind, m.name)}
    return hosts

"""How a node or a service is addressed on the phase's platform: the one place host names
are made.

Docker: the node's name (its hostname and network alias) and each service's alias.
Kubernetes: ``<pod>.<group>-headless.<namespace>.svc.<domain>`` for the pods of a
StatefulSet, ``<service>.<namespace>.svc.<domain>`` for a Service.
"""

from __future__ import annotations

from scaling.model import PhaseSpec, PlatformKind

# Pod DNS names (<pod>.<headless-service>.<namespace>.svc.<domain>) assume the default domain.
CLUSTER_DOMAIN = "cluster.local"


def node_name(group: str, ordinal: int) -> str:
    """StatefulSet pods are ``<set>-<ordinal>``; every platform names nodes that way."""
    return f"{group}-{ordinal}"


def headless_service(group: str) -> str:
    return f"{group}-headless"


def service_fqdn(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"


def pod_fqdn(pod: str, headless: str, namespace: str) -> str:
    return f"{pod}.{service_fqdn(headless, namespace)}"


def on_kubernetes(spec: PhaseSpec) -> bool:
    return spec.platform == PlatformKind.KUBERNETES


def node_host(spec: PhaseSpec, group: str, ordinal: int) -> str:
    name = node_name(group, ordinal)
    if on_kubernetes(spec):
        return pod_fqdn(name, headless_service(group), spec.namespace)
    return name


def service_host(spec: PhaseSpec, service: str) -> str:
    return service_fqdn(service, spec.namespace) if on_kubernetes(spec) else service

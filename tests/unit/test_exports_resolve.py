"""Exports that are true: every host in every exported endpoint or URI is a name that the
objects the stack registers define, on every stack and platform.

Docker: a container's hostname or one of its network aliases (and localhost for the port
Nginx publishes). Kubernetes: a Service's DNS name, a StatefulSet pod's DNS name under its
headless Service, or a Service the StackGres operator creates for a registered cluster.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from support.pulumi_stack import StackRun, run_stack

DOMAIN = "svc.cluster.local"
# Services StackGres creates for each cluster kind (spec.postgresServices).
OPERATOR_SERVICES = {"SGCluster": ("", "-replicas"), "SGShardedCluster": ("", "-reads")}
SCALE_ON_DOCKER = {
    "sikka:platform": "docker",
    "sikka:autoscaling": {"enabled": False},
    "sikka:postgres": {"mode": "replicated"},
}


def _hosts_of(address: str) -> set[str]:
    """Hosts of "h:p", "h1:p,h2:p" or a URI."""
    if "://" in address:
        netloc = address.split("://", 1)[1].split("/", 1)[0]
        netloc = netloc.rsplit("@", 1)[-1]
        if "," not in netloc:
            return {urlsplit(address.replace("redis+sentinel", "redis")).hostname or ""}
        address = netloc
    return {part.rsplit(":", 1)[0] for part in address.split(",") if part}


def exported_hosts(exports: dict[str, Any]) -> set[str]:
    hosts: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and (":" in value) and not value.startswith("sikka"):
            hosts.update(_hosts_of(value))

    keys = ("url", "postgres", "redis", "gateway", "nginx")
    for key in (*keys, "database_uri", "database_read_uri", "redis_uri"):
        if exports.get(key) is not None:
            walk(exports[key])
    return hosts


def docker_names(run: StackRun) -> set[str]:
    names = {"localhost"}
    for container in run.of_type("docker:index/container:Container"):
        names.add(container.inputs["hostname"])
        for network in container.inputs.get("networksAdvanced", []):
            names.update(network.get("aliases", []))
    return names


def kubernetes_names(run: StackRun) -> set[str]:
    names: set[str] = set()
    for resource in run.resources:
        if not resource.type.startswith("kubernetes:"):
            continue
        kind = resource.type.rsplit(":", 1)[-1]
        metadata = resource.inputs.get("metadata") or {}
        name, namespace = metadata.get("name"), metadata.get("namespace")
        if kind == "Service":
            names.add(f"{name}.{namespace}.{DOMAIN}")
        elif kind == "StatefulSet":
            spec = resource.inputs["spec"]
            # Pods resolve only under a registered headless Service.
            for index in range(int(spec.get("replicas", 0))):
                names.add(f"{name}-{index}.{spec['serviceName']}.{namespace}.{DOMAIN}")
        elif kind in OPERATOR_SERVICES:
            names.update(
                f"{name}{suffix}.{namespace}.{DOMAIN}" for suffix in OPERATOR_SERVICES[kind]
            )
    services = {
        f"{r.inputs['metadata']['name']}.{r.inputs['metadata']['namespace']}.{DOMAIN}"
        for r in run.of_type("kubernetes:core/v1:Service")
    }
    # A pod name needs its headless Service to exist.
    return {n for n in names if n.count(".") == 4 or n.split(".", 1)[1] in services}


CASES = [
    ("launch", {}),
    ("growth", {}),
    ("scale", SCALE_ON_DOCKER),
    ("scale", {}),
    ("growth", {"sikka:platform": "kubernetes"}),
    ("launch", {"sikka:platform": "kubernetes"}),
]


@pytest.mark.parametrize(("stack", "overrides"), CASES, ids=lambda v: str(v))
def test_every_exported_host_is_defined(stack: str, overrides: dict[str, Any]) -> None:
    run = run_stack(stack, overrides)
    hosts = exported_hosts(run.exports)
    assert len(hosts) >= 3, hosts
    on_k8s = run.exports["platform"] == "kubernetes"
    defined = kubernetes_names(run) if on_k8s else docker_names(run)
    assert hosts <= defined, sorted(hosts - defined)


def test_an_undefined_host_is_caught() -> None:
    run = run_stack("growth")
    exports = {**run.exports, "redis_uri": "redis://:x@sentinel-1:26379/0"}
    assert "sentinel-1" in exported_hosts(exports) - docker_names(run)

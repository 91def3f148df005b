"""Adding monitoring to a running phase leaves what runs in place: evaluated under the mock
engine, every resource a stack had before monitoring keeps its URN and protect flags, and
its inputs, except the few that monitoring has to change, each for a stated reason.

``data/graph_before_monitoring.json`` is :func:`graph` of each stack at the last commit
before monitoring (run this module as a script against that checkout to make it again).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from support.pulumi_stack import Registered, StackRun, run_stack

from scaling.render.scram import scram_verifier

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("data") / "graph_before_monitoring.json"
STACKS = ("launch", "growth", "scale")

# What monitoring changes on purpose, by resource name:
CHANGED = {
    # The monitoring role (pg_monitor) is created with the other roles, from its own secret,
    # and pg_hba / PgBouncer admit it: the containers are replaced one at a time, their
    # volumes are not touched (they are among the unchanged resources). The same containers
    # get the SCRAM verifiers of the application and monitoring roles instead of their
    # passwords (checked below for the launch primary).
    "launch": {"sikka-launch-postgres-postgres-0"},
    "growth": {
        "sikka-growth-postgres-postgres-0",
        "sikka-growth-postgres-postgres-1",
        "sikka-growth-postgres-postgres-2",
        "sikka-growth-postgres-pgbouncer-0",
        "sikka-growth-postgres-pgbouncer-1",
        # Not monitoring: the routers check a member that is out every 250 ms (downinter),
        # so a promoted leader takes writes sooner (stateless; replaced, nothing to keep).
        "sikka-growth-postgres-haproxy-0",
        "sikka-growth-postgres-haproxy-1",
    },
    "scale": {
        # The nginx-prometheus-exporter container beside Nginx (a rolling update).
        "sikka-scale-nginx-deployment-nginx",
        # Prometheus to the exporter's port; the Redis exporter to Redis's client ports.
        "sikka-scale-nginx-networkpolicy-nginx-ingress",
        "sikka-scale-redis-networkpolicy-redis-ingress",
        # configurations.observability.prometheusAutobind, read by the operator alone
        # (checked below: nothing else of the cluster changes).
        "sikka-scale-postgres-sgshardedcluster-postgres",
    },
}


def canonical(inputs: Any, root: str) -> str:
    """The inputs as text, without what differs between two evaluations of one program (the
    mock engine's unknown values) or between checkouts (the project folder)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    text = re.sub(r"<pulumi\.output\.Unknown object at 0x[0-9a-f]+>", "<unknown>", text)
    return text.replace(root, "<project>")


def digest(inputs: Any, root: str) -> str:
    return hashlib.sha256(canonical(inputs, root).encode()).hexdigest()


def entry(resource: Registered, root: str) -> dict[str, Any]:
    return {
        "protect": resource.protect,
        "retain_on_delete": resource.retain_on_delete,
        "inputs_sha256": digest(resource.inputs, root),
    }


def graph(run: StackRun, root: str) -> dict[str, dict[str, Any]]:
    return {r.urn: entry(r, root) for r in run.resources}


@pytest.fixture(scope="module")
def before() -> dict[str, dict[str, dict[str, Any]]]:
    return json.loads(SNAPSHOT.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("stack", STACKS)
def test_every_earlier_resource_keeps_its_urn_protection_and_inputs(
    stack: str, before: dict[str, dict[str, dict[str, Any]]]
) -> None:
    run = run_stack(stack)
    now = graph(run, str(ROOT))
    earlier = before[stack]
    missing = sorted(urn for urn in earlier if urn not in now)
    assert missing == [], "resources renamed or dropped"
    changed = set()
    for urn, was in earlier.items():
        assert now[urn]["protect"] == was["protect"], urn
        assert now[urn]["retain_on_delete"] == was["retain_on_delete"], urn
        if now[urn]["inputs_sha256"] != was["inputs_sha256"]:
            changed.add(urn.rsplit("::", 1)[1])
    assert changed == CHANGED[stack]
    # Monitoring only adds: every new resource belongs to the monitoring component, is a
    # secret or its Docker image, or an image of the exporters; besides, the salt of each
    # SCRAM verifier that PostgreSQL and PgBouncer hold instead of a password.
    added = [r for r in run.resources if r.urn not in earlier]
    assert added
    for resource in added:
        assert (
            "monitoring" in resource.urn
            or resource.name.startswith("image-")
            or resource.type == "random:index/randomPassword:RandomPassword"
            or (
                resource.type == "random:index/randomBytes:RandomBytes"
                and resource.name.endswith("-password-scram-salt")
            )
        ), resource.urn


def test_the_cluster_changes_by_its_observability_setting_alone(
    before: dict[str, dict[str, dict[str, Any]]],
) -> None:
    run = run_stack("scale")
    (cluster,) = run.of_type("kubernetes:stackgres.io/v1alpha1:SGShardedCluster")
    inputs = copy.deepcopy(cluster.inputs)
    assert inputs["spec"]["configurations"].pop("observability") == {"prometheusAutobind": True}
    assert digest(inputs, str(ROOT)) == before["scale"][cluster.urn]["inputs_sha256"]
    assert cluster.protect and cluster.retain_on_delete


def test_the_monitoring_role_is_all_that_changes_in_a_postgres_container(
    before: dict[str, dict[str, dict[str, Any]]],
) -> None:
    """Without the monitoring role's verifier and lines, and with the application role's
    password where its SCRAM verifier now is (the container holds the verifier, which the
    start-up SQL sets), the launch primary's inputs are what they were."""
    run = run_stack("launch")
    (primary,) = [r for r in run.resources if r.name == "sikka-launch-postgres-postgres-0"]
    inputs = copy.deepcopy(primary.inputs)
    envs = [e for e in inputs["envs"] if not e.startswith("MONITORING_PASSWORD_SCRAM=")]
    assert len(envs) == len(inputs["envs"]) - 1
    password = "generated-sikka-launch-secrets-postgres-password"
    (index,) = [i for i, e in enumerate(envs) if e.startswith("DATABASE_PASSWORD_SCRAM=")]
    verifier = envs[index].partition("=")[2]
    salt = base64.b64decode(verifier.split("$")[1].split(":")[1])
    assert verifier == scram_verifier(password, salt)
    envs[index] = f"DATABASE_PASSWORD={password}"
    inputs["envs"] = envs
    marker = "sikka_monitor"
    for upload in inputs["uploads"]:
        content: str = upload["content"]
        upload["content"] = content = content.replace(
            "$DATABASE_PASSWORD_SCRAM", "$DATABASE_PASSWORD"
        )
        if marker not in content:
            continue
        if upload["file"].endswith("pg_hba.conf"):
            lines = content.splitlines(keepends=True)
            upload["content"] = "".join(line for line in lines if marker not in line)
        else:  # the start scripts: the role's statements, one SQL block each
            upload["content"] = _without_monitoring_sql(content)
    assert digest(inputs, str(ROOT)) == before["launch"][primary.urn]["inputs_sha256"]


def _without_monitoring_sql(script: str) -> str:
    """The script less its monitoring statements (each one SQL block of its own)."""
    blocks = script.split("\n\n")
    return "\n\n".join(b for b in blocks if "sikka_monitor" not in b and "pg_monitor" not in b)


if __name__ == "__main__":  # python tests/unit/test_monitoring_upgrade.py OUT.json
    out = {stack: graph(run_stack(stack), str(ROOT)) for stack in STACKS}
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")

"""Redis topologies: standalone, Sentinel, and a hostname-announcing Redis Cluster."""

from __future__ import annotations

import re

from k8s_support import SPECS, env_of, find, of_kind, on_kubernetes

from scaling.kubernetes import Manifest, build_manifests
from scaling.kubernetes.redis import client_env, cluster_create_script


def _conf(manifests: list[Manifest], name: str = "redis.conf") -> str:
    return find(manifests, "ConfigMap", "redis-config").body["data"][name]


def test_scale_runs_a_six_node_cluster_with_the_memory_split_over_the_masters() -> None:
    spec = SPECS["scale"]()
    manifests = build_manifests(spec)
    nodes = find(manifests, "StatefulSet", "redis").body["spec"]
    assert nodes["replicas"] == 6 == spec.redis.masters * (1 + spec.redis.replicas_per_master)
    conf = _conf(manifests)
    assert f"maxmemory {65536 // 3}mb" in conf
    assert "cluster-enabled yes" in conf
    assert f"cluster-node-timeout {spec.redis.cluster_node_timeout_ms}" in conf
    assert "cluster-preferred-endpoint-type hostname" in conf
    container = nodes["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--cluster-announce-hostname") + 1] == "$(POD_FQDN)"
    fqdn = env_of(container)["POD_FQDN"]["value"]
    assert fqdn == "$(POD_NAME).redis-headless.sikka-scale.svc.cluster.local"
    # $(POD_FQDN) only expands if POD_FQDN is defined, and POD_NAME before it.
    names = [e["name"] for e in container["env"]]
    assert names.index("POD_NAME") < names.index("POD_FQDN")


def test_cluster_nodes_are_published_before_ready_and_budgeted_one_at_a_time() -> None:
    manifests = build_manifests(SPECS["scale"]())
    headless = find(manifests, "Service", "redis-headless").body["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["ports"]} == {6379, 16379}
    pdb = find(manifests, "PodDisruptionBudget", "redis").body["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"]["app.kubernetes.io/name"] == "redis"


def test_cluster_create_job_is_idempotent_and_uses_hostnames() -> None:
    spec = SPECS["scale"]()
    job = find(build_manifests(spec), "Job", "redis-cluster-create")
    script = job.body["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert script == cluster_create_script(spec)
    create = script.index("--cluster create")
    # The formed-cluster check comes first and exits without creating anything.
    assert script.index("cluster_state:ok") < create
    assert script.index("exit 0") < create
    hosts = re.findall(
        r"redis-\d\.redis-headless\.sikka-scale\.svc\.cluster\.local:6379", script[create:]
    )
    assert len(hosts) == 6
    assert "--cluster-replicas 1 --cluster-yes" in script
    assert script.startswith("set -eu")
    assert job.body["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


def test_growth_runs_sentinel_with_stable_dns_names() -> None:
    spec = SPECS["growth"]()
    manifests = build_manifests(spec)
    data = find(manifests, "StatefulSet", "redis").body["spec"]
    sentinels = find(manifests, "StatefulSet", "redis-sentinel").body["spec"]
    assert data["replicas"] == 1 + spec.redis.replicas == 3
    assert sentinels["replicas"] == spec.redis.sentinels == 3
    sentinel_conf = _conf(manifests, "sentinel.conf")
    assert f"sentinel monitor {spec.redis.master_name} __MASTER_HOST__ 6379 2" in sentinel_conf
    start = data["template"]["spec"]["containers"][0]["command"][2]
    # First boot: redis-0 is the master unless the Sentinels name another one.
    assert "master=redis-0.redis-headless.sikka.svc.cluster.local" in start
    assert "--replicaof" in start
    assert "cluster-enabled" not in _conf(manifests)
    assert of_kind(manifests, "Job") == []
    assert {m.name for m in of_kind(manifests, "PodDisruptionBudget")} >= {
        "redis",
        "redis-sentinel",
    }


def test_launch_runs_one_standalone_pod_behind_a_service() -> None:
    manifests = build_manifests(SPECS["launch"]())
    assert find(manifests, "StatefulSet", "redis").body["spec"]["replicas"] == 1
    assert find(manifests, "Service", "redis").body["spec"]["type"] == "ClusterIP"
    assert "cluster-enabled" not in _conf(manifests)


def test_client_env_matches_what_the_gateway_reads() -> None:
    scale = {e["name"]: e["value"] for e in client_env(SPECS["scale"]())}
    assert scale["REDIS_MODE"] == "cluster"
    assert len(scale["REDIS_CLUSTER_NODES"].split(",")) == 6
    growth = {e["name"]: e["value"] for e in client_env(SPECS["growth"]())}
    assert growth["REDIS_MODE"] == "sentinel"
    assert growth["REDIS_MASTER_NAME"] == "sikka"
    assert growth["REDIS_SENTINELS"].split(",")[0] == (
        "redis-sentinel-0.redis-sentinel-headless.sikka.svc.cluster.local:26379"
    )
    launch = {e["name"]: e["value"] for e in client_env(SPECS["launch"]())}
    assert launch == {
        "REDIS_MODE": "standalone",
        "REDIS_URL": "redis://redis.sikka.svc.cluster.local:6379/0",
    }


def test_password_reaches_the_server_through_an_included_file_not_the_configmap() -> None:
    for phase in SPECS:
        manifests = build_manifests(SPECS[phase]())
        conf = _conf(manifests)
        assert conf.rstrip().endswith("include /run/redis/secrets.conf")
        assert "requirepass" not in conf and "masterauth" not in conf
        container = find(manifests, "StatefulSet", "redis").body["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert env_of(container)["REDIS_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "redis-credentials", "key": "password"}
        }
        assert "> /run/redis/secrets.conf" in container["command"][2]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        run = next(
            v
            for v in find(manifests, "StatefulSet", "redis").body["spec"]["template"]["spec"][
                "volumes"
            ]
            if v["name"] == mounts["/run/redis"]
        )
        assert run["emptyDir"]["medium"] == "Memory"


def test_binaries_follow_the_image() -> None:
    valkey = build_manifests(SPECS["scale"]())
    script = find(valkey, "Job", "redis-cluster-create").body["spec"]["template"]["spec"][
        "containers"
    ][0]["command"][-1]
    assert "valkey-cli --cluster create" in script
    spec = on_kubernetes("scale", **{"sikka:redis": {"image": "redis:7.2.5"}})
    manifests = build_manifests(spec)
    start = find(manifests, "StatefulSet", "redis").body["spec"]["template"]["spec"]["containers"][
        0
    ]["command"][2]
    assert "exec redis-server /etc/redis/redis.conf" in start
    assert "valkey" not in start


def test_scripts_survive_kubernetes_variable_expansion() -> None:
    # Kubernetes rewrites "$$" to "$" in command/args: the scripts must not rely on it.
    for phase in SPECS:
        for m in build_manifests(SPECS[phase]()):
            if m.kind in ("StatefulSet", "Job", "Deployment"):
                for c in m.body["spec"]["template"]["spec"]["containers"]:
                    for part in [*c.get("command", []), *c.get("args", [])]:
                        assert "$$" not in part, m.key

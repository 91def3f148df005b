"""Redis topologies: standalone, Sentinel, and a hostname-announcing Redis Cluster."""

from __future__ import annotations

import re
from typing import Any

from k8s_support import SPECS, env_of, find, of_kind, on_kubernetes

from scaling.kubernetes import Manifest, build_manifests
from scaling.topology import build_topology


def _gateway_env(phase: str) -> dict[str, str]:
    manifests = build_manifests(SPECS[phase]())
    container = find(manifests, "Deployment", "gateway").body["spec"]["template"]["spec"][
        "containers"
    ][0]
    return {name: item["value"] for name, item in env_of(container).items() if "value" in item}


def _job_script(manifests: list[Manifest]) -> str:
    job = find(manifests, "Job", "redis-cluster-init")
    command: list[str] = job.body["spec"]["template"]["spec"]["containers"][0]["command"]
    return command[-1]


def _container(manifests: list[Manifest], name: str) -> dict[str, Any]:
    body = find(manifests, "StatefulSet", name).body
    container: dict[str, Any] = body["spec"]["template"]["spec"]["containers"][0]
    return container


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
    # The start script announces $NODE_HOST, each pod's own DNS name.
    assert '--cluster-announce-hostname "$NODE_HOST"' in container["command"][2]
    assert "args" not in container
    fqdn = env_of(container)["NODE_HOST"]["value"]
    assert fqdn == "$(POD_NAME).redis-headless.sikka-scale.svc.cluster.local"
    # $(POD_NAME) only expands if POD_NAME is defined before NODE_HOST.
    names = [e["name"] for e in container["env"]]
    assert names.index("POD_NAME") < names.index("NODE_HOST")
    assert env_of(container)["POD_NAME"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }


def test_cluster_nodes_are_published_before_ready_and_budgeted_one_at_a_time() -> None:
    manifests = build_manifests(SPECS["scale"]())
    headless = find(manifests, "Service", "redis-headless").body["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert {p["port"] for p in headless["ports"]} == {6379, 16379}
    pdb = find(manifests, "PodDisruptionBudget", "redis").body["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"]["app.kubernetes.io/name"] == "redis"


def test_cluster_init_job_runs_the_topology_script_with_hostnames() -> None:
    spec = SPECS["scale"]()
    manifests = build_manifests(spec)
    script = _job_script(manifests)
    node = build_topology(spec).node("redis-cluster-init")
    assert node.entrypoint is not None
    container = find(manifests, "Job", "redis-cluster-init").body["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["command"] == list(node.entrypoint)
    create = script.index("--cluster create")
    # The formed-cluster check comes first: a formed cluster is never created again.
    assert script.index('if [ "$formed" = 0 ]') < create
    create_line = script[create:].splitlines()[0]
    masters = re.findall(
        r"redis-\d\.redis-headless\.sikka-scale\.svc\.cluster\.local:6379", create_line
    )
    assert len(masters) == spec.redis.masters == 3
    assert "--cluster-replicas 0 --cluster-yes" in create_line
    # Every node is named, replicas joining their own master.
    assert len(set(re.findall(r"redis-\d\.redis-headless[.\w-]+:6379", script))) == 6
    assert script.count("join_replica redis-") == 3
    assert script.startswith("set -eu")
    job = find(manifests, "Job", "redis-cluster-init").body["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "OnFailure"
    assert job["backoffLimit"] == 6


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
    assert "master=redis-0.redis-headless.sikka-growth.svc.cluster.local" in start
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


def test_gateways_find_redis_by_the_pods_and_services_defined_here() -> None:
    scale = _gateway_env("scale")
    assert scale["REDIS_MODE"] == "cluster"
    assert scale["REDIS_CLUSTER_NODES"].split(",") == [
        f"redis-{i}.redis-headless.sikka-scale.svc.cluster.local:6379" for i in range(6)
    ]
    growth = _gateway_env("growth")
    assert growth["REDIS_MODE"] == "sentinel"
    assert growth["REDIS_MASTER_NAME"] == "sikka"
    # The Sentinels' pods are redis-sentinel-<i> under redis-sentinel-headless.
    assert growth["REDIS_SENTINELS"].split(",") == [
        f"redis-sentinel-{i}.redis-sentinel-headless.sikka-growth.svc.cluster.local:26379"
        for i in range(3)
    ]
    launch = _gateway_env("launch")
    assert launch["REDIS_MODE"] == "standalone"
    assert launch["REDIS_URL"] == "redis://redis.sikka-launch.svc.cluster.local:6379/0"


def test_statefulsets_are_the_topology_groups() -> None:
    for phase in SPECS:
        spec = SPECS[phase]()
        topology = build_topology(spec)
        manifests = build_manifests(spec)
        for sts in of_kind(manifests, "StatefulSet"):
            nodes = topology.group(sts.name)
            body = sts.body["spec"]
            assert body["replicas"] == len(nodes), sts.key
            assert body["serviceName"] == f"{sts.name}-headless"
            pod = body["template"]["spec"]
            assert pod["terminationGracePeriodSeconds"] == nodes[0].stop.grace_seconds
            container = pod["containers"][0]
            assert container["command"] == list(nodes[0].entrypoint or ())
            probe = container["livenessProbe"]["exec"]["command"]
            assert probe == ["sh", "-c", nodes[0].health.command]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {f.path.rsplit("/", 1)[0] for f in nodes[0].files} <= mounts
            assert set(nodes[0].tmpfs) <= mounts
            assert {v.path for v in nodes[0].volumes} <= mounts


def test_each_pod_expands_to_its_own_node_environment() -> None:
    """$(POD_NAME) is the one per-pod difference: substituted, every pod's environment is
    what the topology gave the node of that name."""
    for phase in SPECS:
        spec = SPECS[phase]()
        topology = build_topology(spec)
        for sts in of_kind(build_manifests(spec), "StatefulSet"):
            container = sts.body["spec"]["template"]["spec"]["containers"][0]
            plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
            for i in range(sts.body["spec"]["replicas"]):
                pod = f"{sts.name}-{i}"
                node = topology.node(pod)
                expanded = {k: v.replace("$(POD_NAME)", pod) for k, v in plain.items()}
                assert expanded == dict(node.env), pod
                assert node.env["NODE_HOST"] == (
                    f"{pod}.{sts.name}-headless.{spec.namespace}.svc.cluster.local"
                )


def test_volumes_are_sized_from_storage_gb_and_retained() -> None:
    spec = on_kubernetes("growth", **{"sikka:redis": {"storageGb": 17}})
    data = find(build_manifests(spec), "StatefulSet", "redis")
    body = data.body["spec"]
    (claim,) = body["volumeClaimTemplates"]
    # The claim keeps its name ("data"): existing PVCs (data-redis-<i>) stay the pods'.
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "17Gi"
    assert body["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert data.holds_data


def test_cluster_volume_does_not_follow_memory() -> None:
    small = on_kubernetes("scale", **{"sikka:redis": {"storageGb": 100}})
    big = on_kubernetes("scale", **{"sikka:redis": {"storageGb": 100, "maxMemoryMb": 131072}})
    claims = [
        find(build_manifests(s), "StatefulSet", "redis").body["spec"]["volumeClaimTemplates"]
        for s in (small, big)
    ]
    assert claims[0] == claims[1]


def test_sentinels_hold_no_data() -> None:
    manifests = build_manifests(SPECS["growth"]())
    sentinels = find(manifests, "StatefulSet", "redis-sentinel")
    assert "volumeClaimTemplates" not in sentinels.body["spec"]
    assert "persistentVolumeClaimRetentionPolicy" not in sentinels.body["spec"]
    assert not sentinels.holds_data
    run = next(v for v in sentinels.body["spec"]["template"]["spec"]["volumes"] if "emptyDir" in v)
    assert run["emptyDir"]["medium"] == "Memory"


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
    script = _job_script(build_manifests(SPECS["scale"]()))
    assert "valkey-cli --cluster create" in script
    spec = on_kubernetes("scale", **{"sikka:redis": {"image": "redis:7.2.5"}})
    manifests = build_manifests(spec)
    start = find(manifests, "StatefulSet", "redis").body["spec"]["template"]["spec"]["containers"][
        0
    ]["command"][2]
    assert "exec redis-server /etc/redis/redis.conf" in start
    assert "valkey" not in start


def test_scripts_survive_kubernetes_variable_expansion() -> None:
    # Kubernetes rewrites "$$" to "$", and $(VAR) of a variable the container defines to its
    # value, in command/args: the scripts must contain neither.
    for phase in SPECS:
        for m in build_manifests(SPECS[phase]()):
            if m.kind in ("StatefulSet", "Job", "Deployment"):
                for c in m.body["spec"]["template"]["spec"]["containers"]:
                    defined = {e["name"] for e in c.get("env", [])}
                    for part in [*c.get("command", []), *c.get("args", [])]:
                        assert "$$" not in part, m.key
                        for name in defined:
                            assert f"$({name})" not in part, (m.key, name)

"""Autoscaling and disruption budgets shared by the Deployments and StatefulSets."""

from __future__ import annotations

from scaling.model import PhaseSpec

from .manifests import Manifest, ObjectTier, labels, obj, selector_labels


def autoscaler(
    spec: PhaseSpec, tier: ObjectTier, name: str, min_replicas: int, max_replicas: int
) -> Manifest:
    """autoscaling/v2 HPA on CPU and memory at the phase's targets. Scale-down is slow and
    one pod at a time: every pod removed closes long-lived WebSockets."""
    auto = spec.autoscaling
    return obj(
        tier,
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        name,
        spec.namespace,
        labels(spec, name, tier),
        spec={
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": min_replicas,
            "maxReplicas": max(min_replicas, max_replicas),
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": auto.cpu_target_percent,
                        },
                    },
                },
                {
                    "type": "Resource",
                    "resource": {
                        "name": "memory",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": auto.memory_target_percent,
                        },
                    },
                },
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
            },
        },
    )


def disruption_budget(spec: PhaseSpec, tier: ObjectTier, name: str) -> Manifest:
    # One pod at a time. (minAvailable would block node drains outright while a phase runs a
    # single replica; maxUnavailable 1 lets them proceed, one pod after another.)
    return obj(
        tier,
        "policy/v1",
        "PodDisruptionBudget",
        name,
        spec.namespace,
        labels(spec, name, tier),
        spec={"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(name)}},
    )

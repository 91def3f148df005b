"""The phase on Kubernetes as plain objects: a pure builder, no Pulumi and no I/O.

``build_manifests(spec)`` returns every object of the phase as :class:`Manifest` records
(tier, apiVersion, kind, name, namespace, full body, whether deleting it deletes data),
mapped from the phase's Topology (:func:`topology_manifests` takes one already built). The
Pulumi layer registers each one as its own typed resource (``k8s.apps.v1.Deployment``,
``k8s.apiextensions.CustomResource`` for StackGres kinds, …) after filling the Secrets'
``${…}`` placeholders with :func:`fill_placeholders`; ``sikka-scaling render`` writes
:func:`to_yaml` as is.

The StackGres operator is a prerequisite; with ``kubernetes.installOperator`` the builder
adds its Namespace and :func:`operator_release` describes the Helm chart to install.
:func:`defined_hosts` lists the DNS names the objects define, for checking what clients
are told against them.
"""

from .build import build_manifests, topology_manifests
from .hosts import defined_hosts
from .manifests import Manifest, ObjectTier, to_yaml
from .postgres import operator_release
from .secrets import SECRET_PLACEHOLDERS, fill_placeholders, placeholder, placeholders_in

__all__ = [
    "SECRET_PLACEHOLDERS",
    "Manifest",
    "ObjectTier",
    "build_manifests",
    "defined_hosts",
    "fill_placeholders",
    "operator_release",
    "placeholder",
    "placeholders_in",
    "to_yaml",
    "topology_manifests",
]

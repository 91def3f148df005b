"""sikka-scaling: the phase named by this stack's config, deployed as one Platform."""

import pulumi

from components.config import spec_from_pulumi
from components.platform import Platform, PlatformArgs
from scaling.promotion import INHERITED_EXPORT, SECRETS_EXPORT, SOURCE_EXPORT
from scaling.safety import SHAPE_EXPORT

spec = spec_from_pulumi()  # raises before any resource is registered on bad config
platform = Platform(f"sikka-{spec.phase.value}", PlatformArgs(spec=spec))

pulumi.export("phase", spec.phase.value)
pulumi.export("platform", spec.platform.value)
pulumi.export("url", platform.nginx.url)
pulumi.export(
    "postgres",
    {
        "primary": platform.postgres.primary_endpoint,
        "replicas": platform.postgres.replica_endpoints,
        "pooler": platform.postgres.pooler_endpoint,
        # Who fails over, and where to ask which member leads now (not known at deploy time).
        "failover": platform.postgres.failover,
    },
)
pulumi.export("redis", platform.redis.endpoints)
pulumi.export("monitoring", platform.monitoring.endpoints)
# Where the gateways and Nginx answer (their /metrics and stub_status stay private).
pulumi.export("gateway", platform.gateway.endpoints)
pulumi.export("nginx", platform.nginx.endpoints)
for name, uri in platform.connection_uris.items():  # database_uri, redis_uri, ... (secret)
    pulumi.export(name, uri)
pulumi.export("thresholds", spec.thresholds.model_dump(by_alias=True))
# Read by a later transition's target (sikka:promoteFrom naming this stack): where it follows
# this stack from, and the passwords it inherits (a secret).
pulumi.export(SOURCE_EXPORT, platform.transition)
pulumi.export(SECRETS_EXPORT, platform.transition_secrets)
pulumi.export(INHERITED_EXPORT, platform.inherited)
# Read back by the next `pulumi up` to refuse changes that would lose data.
pulumi.export(SHAPE_EXPORT, platform.deployed_shape)

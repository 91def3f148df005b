"""PhaseSecrets: the phase's passwords, from `pulumi config set --secret` or generated."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import pulumi
import pulumi_random as random

from scaling.render.env import SECRET_VARIABLES, VERIFIER_OF
from scaling.render.scram import SALT_BYTES, scram_verifier
from scaling.stackconfig import NAMESPACE

# Secret name → config key that may override the generated value.
CONFIG_KEYS = {
    "postgres-password": "postgresPassword",
    "postgres-superuser-password": "postgresSuperuserPassword",
    "replication-password": "replicationPassword",
    "pgbouncer-admin-password": "pgbouncerAdminPassword",
    "postgres-rewind-password": "postgresRewindPassword",
    "patroni-api-password": "patroniApiPassword",
    "redis-password": "redisPassword",
    "monitoring-password": "monitoringPassword",
    "gateway-jwt-secret": "gatewayJwtSecret",
}
# Characters of a generated secret (alphanumeric, ~5.95 bits each): 32 for passwords, 64
# for the HS256 key, which RFC 7518 wants at least as strong as SHA-256 (256 bits).
LENGTHS = {"gateway-jwt-secret": 64}
DEFAULT_LENGTH = 32


class PhaseSecrets(pulumi.ComponentResource):
    """Creates one `random.RandomPassword` per needed secret not supplied in config, and
    the SCRAM verifiers of VERIFIER_OF from the passwords they verify, each with a salt of
    its own (a `random.RandomBytes`, so that the verifier stays the same from run to run).

    Exposes ``values``: secret name → secret Output. Passwords are alphanumeric so they
    survive every config format and shell they pass through.
    """

    values: dict[str, pulumi.Output[str]]

    def __init__(
        self,
        name: str,
        needed: tuple[str, ...],
        opts: pulumi.ResourceOptions | None = None,
        inherited: Mapping[str, pulumi.Output[str]] | None = None,
    ) -> None:
        """``inherited``: secrets a transition's target takes from its source stack (unless
        its own config supplies them): no password is generated for those."""
        super().__init__("sikka:secrets:PhaseSecrets", name, None, opts)
        inherited = inherited or {}
        # The secrets taken from ``inherited`` (the stack's own config supplies the others).
        self.inherited: list[str] = []
        config = pulumi.Config(NAMESPACE)
        self.values = {}
        for secret in needed:
            if secret not in SECRET_VARIABLES:
                raise ValueError(f"unknown secret {secret!r}")
            if secret in VERIFIER_OF:
                continue
            supplied = config.get_secret(CONFIG_KEYS[secret])
            if supplied is not None:
                self.values[secret] = pulumi.Output.secret(supplied)
                continue
            if secret in inherited:
                self.values[secret] = pulumi.Output.secret(inherited[secret])
                self.inherited.append(secret)
                continue
            password = random.RandomPassword(
                f"{name}-{secret}",
                length=LENGTHS.get(secret, DEFAULT_LENGTH),
                special=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.values[secret] = pulumi.Output.secret(password.result)
        for secret in needed:
            if secret in VERIFIER_OF:
                self.values[secret] = self._verifier(name, secret, VERIFIER_OF[secret])
        self.register_outputs({"names": list(self.values)})

    def _verifier(self, name: str, secret: str, password: str) -> pulumi.Output[str]:
        if password not in self.values:
            raise ValueError(f"{secret} verifies {password}, which this phase does not use")
        salt = random.RandomBytes(
            f"{name}-{secret}-salt",
            length=SALT_BYTES,
            opts=pulumi.ResourceOptions(parent=self),
        )
        verifier = pulumi.Output.all(self.values[password], salt.base64).apply(
            lambda args: scram_verifier(args[0], base64.b64decode(args[1]))
        )
        return pulumi.Output.secret(verifier)

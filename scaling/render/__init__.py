"""Pure renderers: PhaseSpec (+ where things listen) → configuration text.

Every consumer (Pulumi Docker and Kubernetes components, `sikka-scaling render`, the local
runner) calls these functions, so no configuration text is written twice.
"""

"""The promotion advisor: pure decisions over measurements of a live phase.

Levels (:mod:`.levels`), sustained breaches (:mod:`.window`), trends (:mod:`.trend`),
capacity estimates and optimisation arithmetic (:mod:`.capacity`), recommendations
(:mod:`.recommend`), the status and summary documents (:mod:`.status`) and the overall
verdict with its exit code (:mod:`.verdict`). Every function here takes Samples, readiness
checks and a PhaseSpec and returns data: no I/O, no clock, no Pulumi.
"""

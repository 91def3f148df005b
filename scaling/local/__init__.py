"""The local runner: a phase's topology as real processes on 127.0.0.1.

What runs is the phase's Topology (scaling.topology, viewed through scaling.local.topology):
one process per node, under the node's name and role. Configs come from the same renderers
as the Docker and Kubernetes stacks (scaling.render); this package only decides where things
listen, starts the processes detached, waits until each answers, and records every pid in a
per-stack state file so `down` stops exactly them.
"""

from scaling.local.runner import LocalRun, LocalUpError, down, status, up

__all__ = ["LocalRun", "LocalUpError", "down", "status", "up"]

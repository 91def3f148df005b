"""Phase transitions that carry the data: `sikka-scaling transition <to> [--from] [--execute]`.

The plan (which named steps, in which order) is pure; the steps act on the running phases
(locally: the processes of `local up`); every step is appended to the target stack's
transition log, and a transition interrupted half-way is resumed or rolled back by the
next run.
"""

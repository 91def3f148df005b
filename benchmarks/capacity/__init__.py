"""Capacity certificate: `sikka-scaling bench <stack>` (run.py) measures a phase brought up
by the local runner and writes benchmarks/certificates/<stack>.json and .md."""

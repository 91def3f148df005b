"""Benchmarks: measured figures, printed; never timed assertions."""

"""Measurements of a live phase: the records every source produces and the advisor judges."""

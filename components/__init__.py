"""Thin Pulumi ComponentResources over the pure core in :mod:`scaling`."""

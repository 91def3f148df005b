"""Pure core of sikka-scaling: the phase model and everything derived from it (no Pulumi)."""

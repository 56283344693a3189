"""Converters of foreign checkpoints into the suite's networks (docs/checkpoints.md)."""

"""Converters of foreign checkpoints into the suite's networks (spec stylegan2_ada.md §11)."""

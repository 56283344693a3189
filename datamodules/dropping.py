"""Evaluation loaders that drop undecodable samples instead of replacing them.

Training may replace a bad sample by its neighbour to keep batches full; an evaluated set must not, or it holds
a duplicate. A dataset returns ``None`` for a sample it could not decode (after counting it in its
``SkipCounter``); :func:`collate_decodable` leaves it out of the batch and :class:`DecodableLoader` skips a
batch of which nothing is left, so every remaining sample is evaluated exactly once.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate


def collate_decodable(items: list[Any]) -> Any | None:
    """``default_collate`` of the samples that are not None; None when every sample was dropped."""
    kept = [x for x in items if x is not None]
    return default_collate(kept) if kept else None


class DecodableLoader(DataLoader):
    """DataLoader with :func:`collate_decodable` (unless another ``collate_fn`` is given) that never yields an
    empty batch. ``len()`` stays the number of batches before dropping (an upper bound)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("collate_fn") is None:
            kwargs["collate_fn"] = collate_decodable
        super().__init__(*args, **kwargs)

    def __iter__(self):
        for batch in super().__iter__():
            if batch is not None:
                yield batch

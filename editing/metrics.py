"""Editing metrics: masked MSE inside/outside the region and time per direction (docs/metrics.md, "Editing").

Suite definition [X]: images mapped to [0, 1] and resized to the mask grid (the Jacobian grid, nearest by
default); ``MSE_in`` = mean over in-mask pixels and channels of ``(edited − original)²``, ``MSE_out`` likewise
outside.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torchmetrics import Metric


def _prepare(images: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    x = (images.float() + 1) / 2
    if x.shape[-1] != size:
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        x = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
    return x


def masked_mse(
    original: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor, mode: str = "nearest"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(MSE_in, MSE_out)`` of ``[N, C, H, W]`` images in [-1, 1] on the ``[S, S]`` mask grid."""
    if original.shape != edited.shape:
        raise ValueError(f"masked_mse: original {tuple(original.shape)} and edited {tuple(edited.shape)} differ")
    size = mask.shape[-1]
    diff = (_prepare(edited, size, mode) - _prepare(original, size, mode)).square().mean(dim=1)  # [N, S, S]
    m = mask.to(diff.device).bool()
    return diff[:, m].mean(dim=1), diff[:, ~m].mean(dim=1)


class MaskedMSE(Metric):
    """Accumulates masked MSE inside/outside a region over batches; ``compute()`` -> dict(mse_in, mse_out)."""

    full_state_update = False

    def __init__(self, mask: torch.Tensor, mode: str = "nearest", **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("mask", mask.bool().clone(), persistent=False)
        self.mode = mode
        for name in ("sum_in", "sum_out", "count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, original: torch.Tensor, edited: torch.Tensor) -> None:
        mse_in, mse_out = masked_mse(original, edited, self.mask, self.mode)
        self.sum_in += mse_in.double().sum()
        self.sum_out += mse_out.double().sum()
        self.count += mse_in.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        return {"mse_in": self.sum_in / self.count, "mse_out": self.sum_out / self.count}


class StageTimer:
    """Wall time of named stages; ``per_direction`` divides the Jacobian + factorisation time by
    directions.
    """

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

    def per_direction(self, num_directions: int, stages: tuple[str, ...] = ("jacobian", "factorise")) -> float:
        if num_directions <= 0:
            raise ValueError(f"per_direction: expected a positive number of directions, got {num_directions}")
        return sum(self.seconds.get(s, 0.0) for s in stages) / num_directions

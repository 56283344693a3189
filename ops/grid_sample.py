"""Bilinear ``grid_sample`` (zeros padding, align_corners=False) with double backward (docs/ops.md).

Needed because ATen's ``grid_sampler_2d_backward`` has no derivative (pytorch/pytorch#34704), while R1 through
ADA's geometric augmentation differentiates twice (NVlabs stylegan2-ada-pytorch ``grid_sample_gradfix.py``).

- Reference path: a gather-based bilinear sampler in plain PyTorch, differentiable to any order with respect
  to both ``input`` and ``grid``.
- Compiled path (``suite_ops::grid_sample_2d`` + ``suite_ops::grid_sample_2d_backward``): first
  derivatives for input and grid; second derivatives with respect to ``input`` (what R1 needs: the
  grid is built from random augmentation parameters). A second derivative through a grid that requires
  grad raises. ``auto`` therefore uses the compiled path only when the grid does not require grad.
"""

from __future__ import annotations

import torch

from ops import _backend


def _grid_sample_ref(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Reference: bilinear mix of the four neighbours, zero outside the image (align_corners=False)."""
    n, c, h, w = input.shape
    ho, wo = grid.shape[1], grid.shape[2]
    ix = ((grid[..., 0] + 1) * w - 1) / 2
    iy = ((grid[..., 1] + 1) * h - 1) / 2
    x0 = ix.detach().floor()
    y0 = iy.detach().floor()
    wx1, wy1 = ix - x0, iy - y0
    wx0, wy0 = 1 - wx1, 1 - wy1
    flat = input.reshape(n, c, h * w)
    out = None
    for yy, wy in ((y0, wy0), (y0 + 1, wy1)):
        for xx, wx in ((x0, wx0), (x0 + 1, wx1)):
            valid = (xx >= 0) & (xx <= w - 1) & (yy >= 0) & (yy <= h - 1)
            idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long().reshape(n, 1, ho * wo).expand(n, c, -1)
            tap = flat.gather(2, idx).reshape(n, c, ho, wo) * (wy * wx * valid).unsqueeze(1).to(input.dtype)
            out = tap if out is None else out + tap
    return out


def grid_sample(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(input, grid, 'bilinear', 'zeros', align_corners=False)``, twice differentiable."""
    if not (isinstance(input, torch.Tensor) and input.ndim == 4):
        raise ValueError(f"grid_sample: input must be [N, C, H, W], got {getattr(input, 'shape', type(input))}")
    if not (isinstance(grid, torch.Tensor) and grid.ndim == 4 and grid.shape[3] == 2):
        raise ValueError(f"grid_sample: grid must be [N, Ho, Wo, 2], got {getattr(grid, 'shape', type(grid))}")
    if grid.shape[0] != input.shape[0] or grid.dtype != input.dtype:
        raise ValueError(
            f"grid_sample: grid {tuple(grid.shape)} {grid.dtype} must match input "
            f"{tuple(input.shape)} {input.dtype} "
            "in batch size and dtype"
        )
    backend = _backend.get_backend()
    if backend == "compiled" or (backend == "auto" and not grid.requires_grad):
        if _backend.use_compiled("grid_sample", input):
            return torch.ops.suite_ops.grid_sample_2d(input, grid)
    return _grid_sample_ref(input, grid)

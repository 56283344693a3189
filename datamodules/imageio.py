"""Image conversion and grids shared by training, generation and editing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(img: torch.Tensor, drange: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Network output in ``drange`` -> uint8 [N, C, H, W] (rounded, clamped), as NVIDIA's generate.py."""
    lo, hi = drange
    img = (img.detach().float() - lo) * (255 / (hi - lo))
    return img.round().clamp(0, 255).to(torch.uint8).cpu()


def make_grid(images: torch.Tensor, grid: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [N, C, H, W] -> one HWC (or HW) array with ``grid`` = (rows, cols); empty cells stay black."""
    if images.dtype != torch.uint8:
        raise TypeError(f"make_grid expects uint8 images, got {images.dtype}")
    n, c, h, w = images.shape
    if grid is None:
        cols = int(np.ceil(np.sqrt(n)))
        grid = (int(np.ceil(n / cols)), cols)
    rows, cols = grid
    canvas = torch.zeros([c, rows * h, cols * w], dtype=torch.uint8)
    for i in range(min(n, rows * cols)):
        r, k = divmod(i, cols)
        canvas[:, r * h : (r + 1) * h, k * w : (k + 1) * w] = images[i]
    arr = canvas.permute(1, 2, 0).numpy()
    return arr[:, :, 0] if c == 1 else arr


def save_image_grid(images: torch.Tensor, path: str | Path, grid: tuple[int, int] | None = None) -> Path:
    """Write a grid of uint8 images as PNG (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_grid(images, grid)).save(path)
    return path

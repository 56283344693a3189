"""Network outputs to pixels: the one uint8 conversion and the one grid writer of the suite.

Every layer above this one writes generator outputs (data preparation, metrics, editing, training grids, the
entry points), so this module sits at the bottom, beside the networks whose outputs it converts. Two named
quantisations exist because the references differ:

- ``"nvidia"``: ``(x * 127.5 + 128).clamp(0, 255)`` truncated to uint8, as NVlabs' ``generate.py`` and
  ``metrics/metric_utils.py`` (the metrics' detectors see exactly these pixels);
- ``"round"``: ``round((x - lo) * 255 / (hi - lo))`` clamped, for any range ``drange`` (heatmaps in [0, 1]).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

QUANTISATIONS = ("nvidia", "round")


def to_uint8(img: torch.Tensor, drange: tuple[float, float] = (-1.0, 1.0), quantize: str = "round") -> torch.Tensor:
    """Images in ``drange`` -> uint8 [N, C, H, W] on their device with the named quantisation (module docstring)."""
    if quantize not in QUANTISATIONS:
        raise ValueError(f"to_uint8: quantize must be one of {QUANTISATIONS}, got {quantize!r}")
    lo, hi = drange
    x = img.detach().float()
    if quantize == "nvidia":
        if (lo, hi) != (-1.0, 1.0):
            raise ValueError(f"to_uint8: the 'nvidia' quantisation is defined for drange (-1, 1), got {drange}")
        return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return ((x - lo) * (255 / (hi - lo))).round().clamp(0, 255).to(torch.uint8)


def to_hwc(images: torch.Tensor) -> np.ndarray:
    """uint8 [..., C, H, W] -> numpy [..., H, W, C] on the host (for PIL, video encoders, HTML)."""
    return images.movedim(-3, -1).cpu().numpy()


def make_grid(images: torch.Tensor, grid: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 [N, C, H, W] -> one HWC (or HW for one channel) array with ``grid`` = (rows, cols); empty cells stay
    black; without ``grid`` the most square layout."""
    if images.dtype != torch.uint8:
        raise TypeError(f"make_grid expects uint8 images, got {images.dtype}")
    n, c, h, w = images.shape
    if grid is None:
        cols = int(np.ceil(np.sqrt(n)))
        grid = (int(np.ceil(n / cols)), cols)
    rows, cols = grid
    images = images.cpu()
    canvas = torch.zeros([c, rows * h, cols * w], dtype=torch.uint8)
    for i in range(min(n, rows * cols)):
        r, k = divmod(i, cols)
        canvas[:, r * h : (r + 1) * h, k * w : (k + 1) * w] = images[i]
    arr = canvas.permute(1, 2, 0).numpy()
    return arr[:, :, 0] if c == 1 else arr


def save_image_grid(images: torch.Tensor, path: str | Path, grid: tuple[int, int] | None = None) -> Path:
    """Write a grid of uint8 images as PNG, atomically (a temporary file renamed; parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(make_grid(images, grid)).save(tmp, format="PNG")
    tmp.replace(path)
    return path

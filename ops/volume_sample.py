"""Trilinear point-to-volume lookup, differentiable twice in the volume and in the points.

VolumeGAN (arXiv 2112.10759, Sec. 3) reads its 3-D feature volume at every ray sample; R1 and path-length
regularisation differentiate through that lookup, so it needs second derivatives. The semantics are those of
genforce/volumegan ``models/rendering/utils.py`` (``grid_sample_3d``): align_corners=True index convention
``i = (g + 1) / 2 * (size - 1)``, weights from the unclamped fractional part, corner indices clamped into the
volume. Values therefore equal ``F.grid_sample(volume, grid, 'bilinear', 'border', align_corners=True)``
everywhere; derivatives equal it inside the volume.

- Reference path: eight gathers in plain PyTorch, differentiable to any order in volume and points.
- Compiled path: ``suite_ops::volume_sample_3d``, its backward ``volume_sample_3d_backward`` and that one's
  derivative ``volume_sample_3d_double_backward`` (CPU C++ and CUDA kernels): first and second derivatives with
  respect to the volume and the points; a third derivative raises.
"""

from __future__ import annotations

import torch

from ops import _backend


def _volume_sample_ref(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Reference: volume [N, C, D, H, W] at points [N, P, 3] (x, y, z in [-1, 1]) -> [N, C, P]."""
    n, c, d, h, w = volume.shape
    p = points.shape[1]
    sizes = (w, h, d)
    lo, frac = [], []
    for axis, size in enumerate(sizes):
        idx = (points[..., axis] + 1) * ((size - 1) / 2)
        base = idx.detach().floor()
        lo.append(base)
        frac.append(idx - base)
    flat = volume.reshape(n, c, d * h * w)
    out = None
    for k in range(8):
        corner, weight = [], None
        for axis, size in enumerate(sizes):
            bit = (k >> axis) & 1
            corner.append((lo[axis] + bit).clamp(0, size - 1).long())
            f = frac[axis] if bit else 1 - frac[axis]
            weight = f if weight is None else weight * f
        x, y, z = corner
        idx = ((z * h + y) * w + x).reshape(n, 1, p).expand(n, c, p)
        tap = flat.gather(2, idx) * weight.unsqueeze(1).to(volume.dtype)
        out = tap if out is None else out + tap
    return out


def volume_sample(volume: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of ``volume`` [N, C, D, H, W] at ``points`` [N, *S, 3] in [-1, 1]^3 -> [N, C, *S].

    ``points[..., 0]`` indexes W, ``[..., 1]`` H and ``[..., 2]`` D (``grid_sample``'s order); border values
    outside the volume.
    """
    if not (isinstance(volume, torch.Tensor) and volume.ndim == 5):
        raise ValueError(f"volume_sample: volume must be [N, C, D, H, W], got {getattr(volume, 'shape', type(volume))}")
    if not (isinstance(points, torch.Tensor) and points.ndim >= 2 and points.shape[-1] == 3):
        raise ValueError(f"volume_sample: points must be [N, ..., 3], got {getattr(points, 'shape', type(points))}")
    if points.shape[0] != volume.shape[0] or points.dtype != volume.dtype or points.device != volume.device:
        raise ValueError(
            f"volume_sample: points {tuple(points.shape)} {points.dtype} {points.device} must match the volume "
            f"{tuple(volume.shape)} {volume.dtype} {volume.device} in batch size, dtype and device"
        )
    n, c = volume.shape[:2]
    spatial = points.shape[1:-1]
    flat = points.reshape(n, -1, 3)
    if _backend.use_compiled("volume_sample", volume):
        out = torch.ops.suite_ops.volume_sample_3d(volume, flat)
    else:
        out = _volume_sample_ref(volume, flat)
    return out.reshape(n, c, *spatial)

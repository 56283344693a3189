"""DepthGAN's view warp (arXiv 2202.08553, Sec. 3.3): rotate a generated view about the vertical axis.

One function, :func:`rotation_warp`, used by the two rotation-consistency losses and by the RotEval metric, as
``change_a`` in VivianSZF/depthgan runners/losses/depthgan_loss.py and metrics/rotation_metric.py:

1. normalised depth d in [-1, 1] -> z = (d + 1) / 2 + z_offset (z_offset = 0.13);
2. fixed pinhole intrinsics f_x = f_y = ``focal`` (260 px at every resolution), principal point at the image
   centre; unproject every pixel of view 1;
3. translate so that the centre of the x/z bounding box of the points is the origin, rotate about the vertical
   axis by yaw2 - yaw1 (rotation matrix from kornia, axis (0, -1, 0), applied to row vectors as the original),
   translate back, project;
4. bilinearly sample view 2 (its z, optionally its RGB) at the projections (``grid_sample``, zero padding,
   ``align_corners=False``); mask = projection inside the image.

Suite differences [D]: pixels are unprojected at their centres (j + 0.5, i + 0.5), so equal yaws give exactly
the identity; the original unprojects integer coordinates, a half-pixel shift at zero rotation
(``pixel_centres=False`` reproduces it). Points that land behind the camera (z <= 0) are masked out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry.conversions import axis_angle_to_rotation_matrix

DEFAULT_FOCAL = 260.0
DEFAULT_Z_OFFSET = 0.13


@dataclass
class RotationWarp:
    """Result of :func:`rotation_warp`; all maps are [N, C, H, W] on view 1's pixel grid.

    ``z_rot``: z of view 1's points in view 2's camera; ``depth``: view 2's z sampled at their projections;
    ``rgb``: view 2's RGB sampled there (None unless given); ``mask``: float 1 where the comparison is valid;
    ``grid``: the sampling grid [N, H, W, 2] in ``grid_sample`` coordinates.
    """

    z_rot: torch.Tensor
    depth: torch.Tensor
    rgb: torch.Tensor | None
    mask: torch.Tensor
    grid: torch.Tensor


def depth_to_z(depth: torch.Tensor, z_offset: float = DEFAULT_Z_OFFSET) -> torch.Tensor:
    """Normalised depth d -> metric-like z = (d + 1) / 2 + z_offset."""
    return (depth + 1) / 2 + z_offset


def _yaw(yaw: torch.Tensor | float, n: int, like: torch.Tensor) -> torch.Tensor:
    yaw = torch.as_tensor(yaw, dtype=like.dtype, device=like.device).reshape(-1)
    if yaw.numel() == 1:
        yaw = yaw.expand(n)
    if yaw.numel() != n:
        raise ValueError(f"rotation_warp: yaw must have one value per sample ({n}), got {yaw.numel()}")
    return yaw


def rotation_warp(
    depth1: torch.Tensor,
    yaw1: torch.Tensor | float,
    yaw2: torch.Tensor | float,
    depth2: torch.Tensor,
    rgb2: torch.Tensor | None = None,
    focal: float = DEFAULT_FOCAL,
    z_offset: float = DEFAULT_Z_OFFSET,
    occlusion_aware: bool = False,
    pixel_centres: bool = True,
) -> RotationWarp:
    """Warp view 1 (normalised depth ``depth1`` [N, 1, H, W], yaw ``yaw1``) into view 2 (yaw ``yaw2``).

    ``depth2`` [N, 1, H, W] (normalised) and ``rgb2`` [N, C, H, W] are view 2's maps, sampled at the
    projections. ``yaw*``: radians, [N], [N, 1] or a scalar. ``occlusion_aware``: also mask pixels where view 1's
    point is not in front of view 2's surface (z_rot >= sampled z), the original's optional variant.
    """
    if depth1.ndim != 4 or depth1.shape[1] != 1:
        raise ValueError(f"rotation_warp: depth1 must be [N, 1, H, W], got {list(depth1.shape)}")
    if depth2.shape != depth1.shape:
        raise ValueError(f"rotation_warp: depth2 {list(depth2.shape)} must match depth1 {list(depth1.shape)}")
    if rgb2 is not None and (rgb2.ndim != 4 or rgb2.shape[0] != depth1.shape[0] or rgb2.shape[2:] != depth1.shape[2:]):
        raise ValueError(f"rotation_warp: rgb2 must be [N, C, H, W] on depth1's grid, got {list(rgb2.shape)}")
    n, _, h, w = depth1.shape
    theta = _yaw(yaw2, n, depth1) - _yaw(yaw1, n, depth1)
    z = depth_to_z(depth1[:, 0], z_offset)  # [N, H, W]
    offset = 0.5 if pixel_centres else 0.0
    u = torch.arange(w, dtype=z.dtype, device=z.device) + offset
    v = torch.arange(h, dtype=z.dtype, device=z.device) + offset
    x = (u - w / 2)[None, None, :] / focal * z
    y = (v - h / 2)[None, :, None] / focal * z
    pts = torch.stack([x, y, z], dim=-1).reshape(n, -1, 3)
    centre = (pts.amax(dim=1) + pts.amin(dim=1)) / 2
    centre = centre * torch.tensor([1.0, 0.0, 1.0], dtype=z.dtype, device=z.device)  # x/z only
    axis = torch.tensor([0.0, -1.0, 0.0], dtype=z.dtype, device=z.device)
    rot = axis_angle_to_rotation_matrix(axis[None] * theta[:, None])  # [N, 3, 3]
    pts = torch.bmm(pts - centre[:, None], rot) + centre[:, None]
    z_rot = pts[..., 2]
    proj_u = focal * pts[..., 0] / (z_rot + 1e-8) + w / 2
    proj_v = focal * pts[..., 1] / (z_rot + 1e-8) + h / 2
    grid = torch.stack([2 * proj_u / w - 1, 2 * proj_v / h - 1], dim=-1).reshape(n, h, w, 2)
    inside = (grid.abs() <= 1).all(dim=-1) & (z_rot.reshape(n, h, w) > 0)
    sampled_z = F.grid_sample(depth_to_z(depth2, z_offset), grid, mode="bilinear", align_corners=False)
    sampled_rgb = None if rgb2 is None else F.grid_sample(rgb2, grid, mode="bilinear", align_corners=False)
    z_rot = z_rot.reshape(n, 1, h, w)
    mask = inside[:, None].to(z.dtype)
    if occlusion_aware:
        mask = mask * (z_rot < sampled_z).to(z.dtype)
    return RotationWarp(z_rot=z_rot, depth=sampled_z, rgb=sampled_rgb, mask=mask, grid=grid)


def warp_depth_l1(warp: RotationWarp) -> torch.Tensor:
    """Depth rotation-consistency loss: mean |mask * z_sampled - mask * z_rot| over all pixels (original)."""
    return F.l1_loss(warp.mask * warp.depth, warp.mask * warp.z_rot)


def warp_rgb_l1(warp: RotationWarp, rgb1: torch.Tensor) -> torch.Tensor:
    """RGB rotation-consistency loss: mean |mask * rgb2_sampled - mask * rgb1| over all pixels and channels."""
    if warp.rgb is None:
        raise ValueError("warp_rgb_l1: the warp was computed without rgb2")
    return F.l1_loss(warp.mask * warp.rgb, warp.mask * rgb1)

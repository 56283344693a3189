"""Tests of networks/depth_warp.py (DepthGAN's rotation warp). Budget: under 3 s."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from networks.depth_warp import depth_to_z, rotation_warp, warp_depth_l1, warp_rgb_l1


def _ramp(n: int, h: int, w: int) -> torch.Tensor:
    """Channels (u, v): the continuous pixel coordinates of the pixel centres (linear, so bilinear-exact)."""
    u = (torch.arange(w, dtype=torch.float64) + 0.5).expand(h, w)
    v = (torch.arange(h, dtype=torch.float64) + 0.5)[:, None].expand(h, w)
    return torch.stack([u, v])[None].expand(n, 2, h, w)


def test_equal_yaws_give_the_identity():
    gen = torch.Generator().manual_seed(0)
    d = torch.rand(3, 1, 16, 16, generator=gen) * 2 - 1
    rgb = torch.rand(3, 3, 16, 16, generator=gen) * 2 - 1
    yaw = torch.rand(3, generator=gen) - 0.5
    w = rotation_warp(d, yaw, yaw, d, rgb)
    assert torch.equal(w.mask, torch.ones_like(w.mask))
    torch.testing.assert_close(w.depth, depth_to_z(d), atol=1e-5, rtol=0)
    torch.testing.assert_close(w.z_rot, depth_to_z(d), atol=1e-6, rtol=0)
    torch.testing.assert_close(w.rgb, rgb, atol=1e-5, rtol=0)
    assert float(warp_depth_l1(w)) < 1e-5 and float(warp_rgb_l1(w, rgb)) < 1e-5


@pytest.mark.parametrize("theta", [0.2, -0.15])
def test_plane_matches_the_analytic_reprojection(theta):
    n, h, w, f, z0 = 2, 24, 32, 40.0, 0.8
    d = torch.full((n, 1, h, w), 2 * (z0 - 0.13) - 1, dtype=torch.float64)  # fronto-parallel plane at z = z0
    out = rotation_warp(d, torch.zeros(n), torch.full((n,), theta), d, _ramp(n, h, w), focal=f)
    # analytic: X = (u - w/2) z0 / f, rotated about the vertical axis through (0, z0) (the x/z box centre);
    # tolerance 1e-6 for the original's +1e-8 in the projection denominator
    u = np.arange(w) + 0.5
    v = np.arange(h) + 0.5
    x = (u - w / 2) * z0 / f
    y = (v - h / 2) * z0 / f
    z_rot = z0 - x * math.sin(theta)  # [W]
    u2 = f * x * math.cos(theta) / z_rot + w / 2
    v2 = f * y[:, None] / z_rot[None, :] + h / 2
    np.testing.assert_allclose(out.z_rot[0, 0].numpy(), np.broadcast_to(z_rot, (h, w)), atol=1e-12)
    np.testing.assert_allclose(out.grid[0, ..., 0].numpy(), np.broadcast_to(2 * u2 / w - 1, (h, w)), atol=1e-6)
    np.testing.assert_allclose(out.grid[0, ..., 1].numpy(), 2 * v2 / h - 1, atol=1e-6)
    interior = (u2 > 0.5) & (u2 < w - 0.5)
    interior = interior[None, :] & (v2 > 0.5) & (v2 < h - 0.5)
    assert interior.sum() > h * w / 2
    np.testing.assert_allclose(out.rgb[0, 0].numpy()[interior], np.broadcast_to(u2, (h, w))[interior], atol=1e-6)
    np.testing.assert_allclose(out.rgb[0, 1].numpy()[interior], v2[interior], atol=1e-6)
    inside = (np.abs(2 * u2 / w - 1)[None, :] <= 1) & (np.abs(2 * v2 / h - 1) <= 1)
    np.testing.assert_array_equal(out.mask[0, 0].numpy(), inside.astype(np.float64))
    assert 0 < out.mask.mean() < 1


def test_original_pixel_convention_is_a_half_pixel_shift():
    d = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    out = rotation_warp(d, 0.0, 0.0, d, _ramp(1, 8, 8), pixel_centres=False)
    interior = out.rgb[0, 0, 1:, 1:]  # first row/column blend with the zero padding
    torch.testing.assert_close(interior, _ramp(1, 8, 8)[0, 0, 1:, 1:] - 0.5)


def test_gradients_reach_both_views_and_occlusion_mask():
    gen = torch.Generator().manual_seed(1)
    d1 = (torch.rand(2, 1, 12, 12, generator=gen) - 0.5).requires_grad_(True)
    d2 = (torch.rand(2, 1, 12, 12, generator=gen) - 0.5).requires_grad_(True)
    rgb2 = torch.rand(2, 3, 12, 12, generator=gen).requires_grad_(True)
    rgb1 = torch.rand(2, 3, 12, 12, generator=gen)
    w = rotation_warp(d1, torch.tensor([0.1, -0.2]), torch.tensor([[-0.1], [0.2]]), d2, rgb2)
    (warp_depth_l1(w) + warp_rgb_l1(w, rgb1)).backward()
    assert d1.grad.abs().sum() > 0 and d2.grad.abs().sum() > 0 and rgb2.grad.abs().sum() > 0
    occ = rotation_warp(d1.detach(), 0.1, -0.1, d2.detach(), occlusion_aware=True)
    expected = rotation_warp(d1.detach(), 0.1, -0.1, d2.detach())
    torch.testing.assert_close(occ.mask, expected.mask * (expected.z_rot < expected.depth).float())
    with pytest.raises(ValueError, match="one value per sample"):
        rotation_warp(d1.detach(), torch.zeros(3), 0.0, d2.detach())

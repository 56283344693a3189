"""3-D consistency metric (metrics/reprojection.py) on an analytic scene with known answers: a sphere seen by
two cameras with exact depth maps and a colour attached to the surface. Budget: ~2 s on 2 CPU cores."""

import math

import pytest
import torch

from metrics.reprojection import ReprojectionError, reproject
from networks import volume_rendering as vr

FOV = 12.0
RADIUS = 0.3  # sphere at the origin; covers the whole 12-degree view from distance 1


def _sphere_views(yaws, res=48, pitch=math.pi / 2):
    """Exact ray distances to the sphere and a smooth surface colour, per camera; [N, 1, r, r], [N, 3, r, r]."""
    yaw = torch.tensor(yaws, dtype=torch.float64)
    cam = vr.camera_to_world(yaw, torch.full_like(yaw, pitch))
    o, d = vr.camera_rays(cam, res, FOV)
    b = (o * d).sum(-1)
    t = -b - torch.sqrt(b * b - ((o * o).sum(-1) - RADIUS**2))
    x = o + d * t.unsqueeze(-1)
    rgb = torch.stack([torch.sin(8 * x[..., 0]), torch.cos(7 * x[..., 1]), torch.sin(6 * x[..., 2] + 1)], dim=-1)
    n = len(yaws)
    return t.reshape(n, 1, res, res).float(), rgb.permute(0, 2, 1).reshape(n, 3, res, res).float(), cam.float()


def test_reproject_identity_maps_pixels_to_themselves():
    depth, _, cam = _sphere_views([math.pi / 2])
    grid, dist, inside = reproject(depth, cam, cam, FOV)
    lin = torch.linspace(-1, 1, 48)
    torch.testing.assert_close(grid[0, ..., 0], lin.expand(48, 48), atol=1e-5, rtol=0)
    torch.testing.assert_close(grid[0, ..., 1], lin[:, None].expand(48, 48), atol=1e-5, rtol=0)
    torch.testing.assert_close(dist, depth[:, 0], atol=1e-5, rtol=0)
    assert bool(inside[0, 1:-1, 1:-1].all())


def test_consistent_views_score_zero():
    depth, rgb, cam = _sphere_views([math.pi / 2 - 0.05, math.pi / 2 + 0.05])
    metric = ReprojectionError(fov_deg=FOV)
    metric.update(depth[:1], rgb[:1], cam[:1], depth[1:], rgb[1:], cam[1:])
    out = metric.compute()
    assert float(out["depth"]) < 2e-4  # bilinear interpolation of a smooth depth map only
    assert float(out["rgb"]) < 5e-3
    assert 0.7 < float(out["coverage"]) < 0.9  # a 5.7-degree turn moves ~20% of A out of the 12-degree view


def test_depth_offset_is_reported_relative_to_the_depth_range():
    depth, rgb, cam = _sphere_views([math.pi / 2 - 0.05, math.pi / 2 + 0.05])
    metric = ReprojectionError(fov_deg=FOV, depth_range=(0.8, 1.2))
    metric.update(depth[:1], rgb[:1], cam[:1], depth[1:] + 0.02, rgb[1:], cam[1:])
    assert float(metric.compute()["depth"]) == pytest.approx(0.02 / 0.4, abs=3e-4)


def test_inconsistent_texture_is_penalised_and_low_res_depth_is_upsampled():
    depth, rgb, cam = _sphere_views([math.pi / 2 - 0.05, math.pi / 2 + 0.05], res=64)
    low = torch.nn.functional.interpolate(depth, size=(16, 16), mode="bilinear", align_corners=True)
    metric = ReprojectionError(fov_deg=FOV)
    metric.update(low[:1], rgb[:1], cam[:1], low[1:], rgb[1:].flip(-1), cam[1:])
    out = metric.compute()
    assert float(out["depth"]) < 2e-3  # 16x16 depth upsampled to 64x64
    assert float(out["rgb"]) > 0.1


def test_bad_shapes_and_empty_metric_raise():
    depth, rgb, cam = _sphere_views([math.pi / 2, math.pi / 2])
    metric = ReprojectionError()
    with pytest.raises(ValueError, match="img_b: expected shape"):
        metric.update(depth[:1], rgb[:1], cam[:1], depth[1:], rgb, cam[1:])
    with pytest.raises(ValueError, match="no pixel"):
        metric.compute()


def test_evaluate_reprojection_protocol_on_a_tiny_generator():
    from metrics.reprojection import evaluate_reprojection
    from tests.tiny_volumegan import opaque_tiny_volumegan

    G = opaque_tiny_volumegan()
    out = evaluate_reprojection(G, n_samples=3, yaw_deltas_deg=(0.0, 10.0), batch_size=2)
    assert set(out) == {f"reproj_{k}_{d}deg" for k in ("depth", "rgb", "coverage") for d in ("0", "10")}
    assert out["reproj_depth_0deg"] < 1e-5 and out["reproj_coverage_0deg"] > 0.99  # the same view twice
    assert out["reproj_coverage_10deg"] < out["reproj_coverage_0deg"]
    assert all(math.isfinite(v) for v in out.values()) and G.training
